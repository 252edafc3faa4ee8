"""The proxy: `/<connection-token>/<rest>` (path routing) and `<backend-id>.<edge-domain>`
(subdomain routing) to the backend, HTTP and WebSocket, streaming both ways.

Answers of its own: 401 bad/expired/revoked token, 410 backend gone, 503 backend not ready in
time, 502 backend unreachable, 413 body too large. A backend of another node is reached through
that node's edge (one hop at most), never answered by a second backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from edge.access import backend_for, verify_connection_token
from edge.activity import Activity
from edge.drone import Drone
from edge.replica import Replica
from sync.errors import BackendGone, BackendNotReady, BackendUnreachable, PayloadTooLarge, Unauthorized
from sync.models import Change, ChangeKind
from sync.state import BackendState
from sync.tokens import ConnectionClaims

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
HOP_HEADER = "x-meridian-hop"
TOKEN_COOKIE = "meridian_token"
VERIFIED_TOKENS_KEPT = 10_000
SMALL_BODY = 64 * 1024
"""A response with a known length up to this is sent in one write (head and body together)."""
FRESH_TOKEN_S = 60
"""A token issued this recently may name a backend the replica has not learnt yet."""


@dataclass(frozen=True)
class Target:
    backend_id: str
    base_url: str  # http://host:port of the backend, or of the edge owning it
    secret: str | None  # MERIDIAN_SECRET for a local backend; None when forwarding to another edge
    user: str | None
    region: str
    forward_prefix: str  # path prefix to keep when forwarding to another edge ("/<token>")


class Proxy:
    def __init__(
        self,
        *,
        replica: Replica,
        drone: Drone,
        activity: Activity,
        session: aiohttp.ClientSession,
        node_id: str,
        region: str,
        max_body_bytes: int,
        ready_wait_s: float,
        edge_domain: str | None,
    ) -> None:
        self.replica = replica
        self.drone = drone
        self.activity = activity
        self.session = session
        self.node_id = node_id
        self.region = region
        self.max_body_bytes = max_body_bytes
        self.ready_wait_s = ready_wait_s
        self.edge_domain = edge_domain.lower().lstrip(".") if edge_domain else None
        self._replica_changed = asyncio.Event()
        self._verified: dict[str, ConnectionClaims] = {}

    # ---- routing --------------------------------------------------------------------------------

    def subdomain_backend(self, request: web.Request) -> str | None:
        if self.edge_domain is None:
            return None
        host = (request.host or "").split(":")[0].lower()
        suffix = "." + self.edge_domain
        if host.endswith(suffix) and host.count(".") == self.edge_domain.count(".") + 1:
            return host[: -len(suffix)]
        return None

    async def handle_path(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        rest = request.raw_path[len(token) + 1 :] or "/"
        return await self._serve(request, token, rest, forward_prefix=f"/{token}")

    async def handle_subdomain(self, request: web.Request, backend_id: str) -> web.StreamResponse:
        token = request.cookies.get(TOKEN_COOKIE)
        auth = request.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not token:
            raise Unauthorized("connection token required (cookie meridian_token or Authorization)")
        return await self._serve(request, token, request.raw_path, forward_prefix="", expect_backend=backend_id)

    async def _serve(
        self, request: web.Request, token: str, rest: str, *, forward_prefix: str, expect_backend: str | None = None
    ) -> web.StreamResponse:
        claims = self.verify(token)
        if expect_backend is not None and claims.backend_id != expect_backend:
            raise Unauthorized("connection token is for another backend")
        target = await self._target(request, claims, forward_prefix)
        self.activity.begin(target.backend_id)
        try:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._websocket(request, target, rest)
            return await self._http(request, target, rest)
        finally:
            self.activity.end(target.backend_id)

    def on_changes(self, changes: list[Change]) -> None:
        """Replica listener: wake requests waiting for a backend the replica did not know yet, and
        forget verified tokens when keys or revocations change."""
        if any(c.kind in (ChangeKind.SIGNING_KEY, ChangeKind.REVOCATION) for c in changes):
            self._verified.clear()
        self._replica_changed.set()
        self._replica_changed = asyncio.Event()

    def verify(self, token: str) -> ConnectionClaims:
        """Verified tokens are remembered (expiry still checked each time) until a signing key or a
        revocation changes: HMAC and JSON decoding stay off the hot path of a busy connection."""
        claims = self._verified.get(token)
        if claims is None or claims.expires_at <= time.time():
            claims = verify_connection_token(self.replica, token)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    async def _known_backend(self, claims: ConnectionClaims) -> None:
        """A token fresh from `connect` may reach this edge before the sync reply naming its backend:
        wait (bounded) for the replica to learn it rather than answer 410."""
        if time.time() - claims.issued_at > FRESH_TOKEN_S:
            return
        deadline = time.monotonic() + self.ready_wait_s
        while self.replica.backend(claims.backend_id) is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._replica_changed.wait()

    async def _target(self, request: web.Request, claims: ConnectionClaims, forward_prefix: str) -> Target:
        if self.replica.backend(claims.backend_id) is None:
            await self._known_backend(claims)
        backend = backend_for(self.replica, claims)
        if backend.node_id != self.node_id:
            return self._remote_target(request, backend, claims, forward_prefix)
        local = await self.drone.wait_settled(backend.id, self.ready_wait_s)
        if local is None:
            raise BackendNotReady(f"backend {backend.id} is not ready yet; retry", retry_after_s=1.0)
        if local.address is None or not local.status.is_live:
            raise BackendGone(f"backend {backend.id} is gone")
        return Target(backend.id, f"http://{local.address}", backend.secret, claims.user, self.region, "")

    def _remote_target(
        self, request: web.Request, backend: BackendState, claims: ConnectionClaims, forward_prefix: str
    ) -> Target:
        if request.headers.get(HOP_HEADER):
            raise BackendGone(f"backend {backend.id} is not on this node")
        node = self.replica.node(backend.node_id)
        if node is None:
            raise BackendGone(f"backend {backend.id} is on an unknown node")
        return Target(backend.id, node.address.rstrip("/"), None, claims.user, backend.region, forward_prefix)

    # ---- headers --------------------------------------------------------------------------------

    def _upstream_headers(self, request: web.Request, target: Target) -> CIMultiDict[str]:
        connection_named = {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in connection_named or lower.startswith("x-meridian-"):
                continue
            out.add(name, value)
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior and target.secret is None else peer
        out["X-Forwarded-Host"] = request.host
        out["X-Forwarded-Proto"] = request.scheme
        if target.secret is None:  # to another edge: it sets the backend headers itself
            out[HOP_HEADER] = "1"
        else:
            out["x-meridian-backend"] = target.backend_id
            out["x-meridian-region"] = target.region
            out["x-meridian-secret"] = target.secret
            if target.user is not None:
                out["x-meridian-user"] = target.user
        return out

    @staticmethod
    def _downstream_headers(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                out.add(name, value)
        return out

    # ---- HTTP -----------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.content.iter_any():
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise PayloadTooLarge(f"request body is larger than {self.max_body_bytes} bytes")
            yield chunk

    async def _http(self, request: web.Request, target: Target, rest: str) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise PayloadTooLarge(f"request body is larger than {self.max_body_bytes} bytes")
        data = self._body(request) if request.body_exists else None
        url = target.base_url + target.forward_prefix + rest
        try:
            upstream = await self.session.request(
                request.method,
                url,
                headers=self._upstream_headers(request, target),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
            )
        except PayloadTooLarge:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnreachable(f"backend {target.backend_id} is unreachable") from exc
        async with upstream:
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY and request.method != "HEAD":
                body = await upstream.read()
                self.activity.touch(target.backend_id)
                small = web.Response(status=upstream.status, reason=upstream.reason, body=body)
                small.headers.update(self._downstream_headers(upstream.headers.items()))
                return small
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.update(self._downstream_headers(upstream.headers.items()))
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            with contextlib.suppress(aiohttp.ClientPayloadError, ConnectionResetError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                    self.activity.touch(target.backend_id)
            await response.write_eof()
            return response

    # ---- WebSocket ------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request, target: Target, rest: str) -> web.StreamResponse:
        url = target.base_url.replace("http://", "ws://", 1) + target.forward_prefix + rest
        headers = self._upstream_headers(request, target)
        for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
            headers.popall(name, None)
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        headers.popall("Sec-WebSocket-Protocol", None)
        try:
            upstream = await self.session.ws_connect(url, headers=headers, protocols=protocols, autoping=False)
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnreachable(f"backend {target.backend_id} refused the WebSocket") from exc
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), autoping=False)
        await client.prepare(request)
        try:
            await _pump_both(client, upstream, lambda: self.activity.touch(target.backend_id))
        finally:
            await upstream.close()
            await client.close()
        return client


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: WebSocket, sink: WebSocket, touch: Callable[[], None]) -> None:
    async for msg in source:
        touch()
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    await sink.close(code=source.close_code or 1000)


async def _pump_both(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, touch: Callable[[], None]
) -> None:
    tasks = [asyncio.create_task(_pump(client, upstream, touch)), asyncio.create_task(_pump(upstream, client, touch))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
