"""`GET /v1/status/{connection-token}`: a backend's status as Server-Sent Events, for browsers.

The browser holds only the connection token `connect` gave it (no API token), so this stream is
authorised by that token alone and served by the edge from its replica, next to the WebSocket it
will open: `status` events (`{"backend_id", "status", "reason"}`) whenever the backend's status
changes (also of a backend this edge started offline, which the replica does not know yet), then
the stream ends once the backend is terminated; `revoked` (and the end) when the
token is revoked or expires. Comments every `STATUS_STREAM_KEEPALIVE_S` keep idle proxies from cutting it.
Readable cross-origin without credentials: the token in the path is the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from edge import keys
from edge.access import verify_connection_token
from edge.proxy import FRESH_TOKEN_S
from sync.errors import MeridianError, Unauthorized
from sync.timing import STATUS_STREAM_KEEPALIVE_S
from sync.tokens import ConnectionClaims

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "Access-Control-Allow-Origin": "*",
    "X-Accel-Buffering": "no",
}


def _event(name: str, body: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def _known_status(request: web.Request, backend_id: str) -> tuple[str, str | None] | None:
    """(status, reason) as this edge knows the backend: the replica's record, else this node's own
    record of a backend it started offline (the control plane has not heard of it yet)."""
    backend = request.app[keys.REPLICA].backend(backend_id)
    if backend is not None:
        return backend.status.value, backend.termination_reason.value if backend.termination_reason else None
    local = request.app[keys.DRONE].local.get(backend_id)
    if local is None or local.state is None:
        return None
    return local.status.value, local.reason.value if local.reason else None


def _state(request: web.Request, token: str, claims: ConnectionClaims) -> tuple[str, dict[str, object]]:
    """The event describing the backend now: ("status", …) or ("revoked", …)."""
    try:
        verify_connection_token(request.app[keys.REPLICA], token)
    except Unauthorized as exc:
        return "revoked", {"backend_id": claims.backend_id, "message": exc.message}
    known = _known_status(request, claims.backend_id)
    if known is None:
        fresh = time.time() - claims.issued_at <= FRESH_TOKEN_S
        known = ("scheduled", None) if fresh else ("terminated", "unknown")
    status, reason = known
    return "status", {"backend_id": claims.backend_id, "status": status, "reason": reason}


async def status_stream(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        claims = verify_connection_token(request.app[keys.REPLICA], token)
    except MeridianError as exc:
        return web.json_response(exc.to_body(), status=exc.status, headers={"Access-Control-Allow-Origin": "*"})
    changed = asyncio.Event()
    remove = request.app[keys.REPLICA].add_listener(lambda _changes: changed.set())
    unfollow = request.app[keys.DRONE].add_status_listener(
        lambda report: changed.set() if report.id == claims.backend_id else None
    )
    response = web.StreamResponse(headers=HEADERS)
    try:
        await response.prepare(request)
        last: tuple[str, dict[str, object]] | None = None
        while True:
            changed.clear()
            now = _state(request, token, claims)
            if now != last:
                await response.write(_event(*now))
                last = now
            if now[0] == "revoked" or now[1].get("status") == "terminated":
                break
            try:
                async with asyncio.timeout(STATUS_STREAM_KEEPALIVE_S):
                    await changed.wait()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
    finally:
        remove()
        unfollow()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
