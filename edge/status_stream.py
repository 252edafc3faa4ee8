"""`GET /v1/status/{connection-token}`: a backend's status as Server-Sent Events, for browsers.

The browser holds only the connection token `connect` gave it (no API token), so this stream is
authorised by that token alone and served by the edge from its replica, next to the WebSocket it
will open: `status` events (`{"backend_id", "status", "reason"}`) whenever the backend's status
changes, then the stream ends once the backend is terminated; `revoked` (and the end) when the
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


def _state(request: web.Request, token: str, claims: ConnectionClaims) -> tuple[str, dict[str, object]]:
    """The event describing the backend now: ("status", …) or ("revoked", …)."""
    replica = request.app[keys.REPLICA]
    try:
        verify_connection_token(replica, token)
    except Unauthorized as exc:
        return "revoked", {"backend_id": claims.backend_id, "message": exc.message}
    backend = replica.backend(claims.backend_id)
    if backend is None:
        fresh = time.time() - claims.issued_at <= FRESH_TOKEN_S
        status, reason = ("scheduled", None) if fresh else ("terminated", "unknown")
    else:
        status, reason = backend["status"], backend.get("termination_reason")
    return "status", {"backend_id": claims.backend_id, "status": status, "reason": reason}


async def status_stream(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        claims = verify_connection_token(request.app[keys.REPLICA], token)
    except MeridianError as exc:
        return web.json_response(exc.to_body(), status=exc.status, headers={"Access-Control-Allow-Origin": "*"})
    changed = asyncio.Event()
    remove = request.app[keys.REPLICA].add_listener(lambda _changes: changed.set())
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
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
