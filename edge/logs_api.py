"""``GET /v1/backends/{id}/logs`` at the edge that runs (or ran) the backend: admin only, checked
against the replica like every edge-side API token.

``tail`` (0 to 10000, default 100) lines first, then with ``follow=true`` what the backend writes until
it ends (the answer is chunked ``text/plain``). The control plane's route of the same path proxies
here, so an operator can ask either.
"""

from __future__ import annotations

from aiohttp import web

from edge import keys
from edge.access import api_caller
from edge.executors.base import check_backend_id
from edge.executors.logs import MAX_TAIL_LINES
from edge.executors.router import ExecutorError
from sync.errors import BackendUnreachable, BadRequest, NotFound

DEFAULT_TAIL = 100


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 6 or int(raw) > high:
        raise BadRequest(f"{name} must be an integer from 0 to {high}", fields={name: raw[:32]})
    return int(raw)


def _query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest(f"{name} must be true or false", fields={name: raw[:32]})
    return raw in ("true", "1")


async def backend_logs(request: web.Request) -> web.StreamResponse:
    api_caller(request.app[keys.REPLICA], request.headers.get("Authorization"))  # admin only
    backend_id = request.match_info["backend_id"]
    try:
        check_backend_id(backend_id)
    except ExecutorError as exc:
        raise BadRequest("not a backend id", fields={"backend_id": backend_id[:64]}) from exc
    tail = _query_int(request, "tail", DEFAULT_TAIL, MAX_TAIL_LINES)
    follow = _query_bool(request, "follow")
    try:
        stream = await request.app[keys.EXECUTORS].read_logs(backend_id, tail=tail, follow=follow)
    except ExecutorError as exc:  # e.g. Nomad cannot be reached to read a job's logs
        raise BackendUnreachable(f"cannot read the logs of {backend_id}: {exc}") from exc
    if stream is None:
        raise NotFound(f"this edge has no logs of backend {backend_id}", fields={"backend_id": backend_id})
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    async for chunk in stream:
        await response.write(chunk)
    await response.write_eof()
    return response
