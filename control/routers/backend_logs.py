"""``GET /v1/backends/{id}/logs`` on the control plane (admin): proxied to the edge node that runs
(or ran) the backend, which keeps the log files and serves the same path, checking the same admin
token against its replica. Proxied rather than redirected so that the caller's ``Authorization``
is not dropped by clients that strip it on a redirect to another host, and so a ``follow`` stream
works through one URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import orjson
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from control.http.deps import AdminCaller, State
from control.queries import backends, edge_nodes
from sync.errors import BackendUnreachable, ErrorCode, MeridianError, NotFound, error_from_body

router = APIRouter(prefix="/v1/backends")

BackendId = Annotated[str, Path(pattern=r"^bk-[A-Za-z0-9_-]{1,60}$")]
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0  # without follow: a tail is read at once


@router.get("/{backend_id}/logs", response_class=StreamingResponse)
async def backend_logs(
    backend_id: BackendId,
    state: State,
    caller: AdminCaller,
    authorization: Annotated[str, Header()],
    tail: Annotated[int, Query(ge=0, le=10_000)] = 100,
    follow: Annotated[bool, Query()] = False,
) -> StreamingResponse:
    async with state.pool.acquire() as conn:  # database errors: the app's global handlers
        row = await backends.get(conn, backend_id)
        node = await edge_nodes.get(conn, row["node_id"]) if row is not None else None
    if row is None or node is None:
        raise NotFound(f"no backend {backend_id}", fields={"backend_id": backend_id})
    url = f"{node['address'].rstrip('/')}/v1/backends/{backend_id}/logs"
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None if follow else READ_TIMEOUT_S), trust_env=False
    )
    try:
        request = client.build_request(
            "GET",
            url,
            params={"tail": str(tail), "follow": "true" if follow else "false"},
            headers={"Authorization": authorization},
        )
        answer = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise BackendUnreachable(
            f"the edge node {node['id']} holding the logs is unreachable", fields={"node": node["id"]}
        ) from exc
    if answer.status_code != 200:
        try:
            raise _edge_error(answer.status_code, await answer.aread())
        finally:
            await answer.aclose()
            await client.aclose()

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return  # the edge went away mid-stream: end the stream

    async def close() -> None:
        await answer.aclose()
        await client.aclose()

    return StreamingResponse(
        body(),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        background=BackgroundTask(close),
    )


def _edge_error(status: int, body: bytes) -> MeridianError:
    """The edge's typed error, passed on; anything else is the edge misbehaving (502)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = error_from_body(status, parsed)
    if error.code is ErrorCode.INTERNAL:
        return BackendUnreachable(f"the edge node holding the logs answered HTTP {status}")
    return error
