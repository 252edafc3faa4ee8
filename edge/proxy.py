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
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from edge.access import verify_connection_token
from edge.activity import Activity
from edge.drone import Drone
from edge.forwarding import (
    TOKEN_COOKIE,
    BackendRoute,
    ClientFacts,
    ForwardingPolicy,
    ResponseRewrite,
    facts_from_hop,
    is_proven_hop,
    origin_form,
)
from edge.replica import Replica
from edge.supersede import SupersededRedirect, redirect_if_superseded
from sync.close_codes import CLOSE_BACKEND_GONE, CLOSE_REVOKED, CLOSE_SUPERSEDED, REASON_REVOKED, REASON_SUPERSEDED
from sync.errors import BackendGone, BackendNotReady, BackendUnreachable, PayloadTooLarge, Unauthorized
from sync.models import Change, ChangeKind, TerminationReason
from sync.routing import base_path
from sync.state import BackendState
from sync.tokens import ConnectionClaims

log = logging.getLogger(__name__)

VERIFIED_TOKENS_KEPT = 10_000
SMALL_BODY = 64 * 1024
"""A response with a known length up to this is sent in one write (head and body together)."""
FRESH_TOKEN_S = 60
"""A token issued this recently may name a backend the replica has not learnt yet."""


BACKEND_ID = re.compile(r"^bk-[A-Za-z0-9_-]{1,60}$")
NO_TOTAL_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
"""A streaming response (SSE, a download) may last as long as it likes."""
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
"""aiohttp's client adds these when absent: the policy decides the headers, not the client library."""


class FastPathStats(Protocol):
    def fast_path_share(self) -> float | None: ...

    def end_websockets_of(self, backend_id: str, code: int, reason: str) -> int: ...


def proxy_client_session() -> aiohttp.ClientSession:
    """The client the aiohttp path proxies with: no headers of its own, no decompression, no total timeout."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=SKIP_AUTO_HEADERS,
        timeout=NO_TOTAL_TIMEOUT,
    )


@dataclass(frozen=True)
class Target:
    """Where a request goes: a local backend (route set) or the edge owning it (route None)."""

    backend_id: str
    address: str  # host:port
    route: BackendRoute | None
    secret: str
    max_body_bytes: int


@dataclass(frozen=True)
class Incoming:
    """A client request as routing read it."""

    token: str
    path: str  # origin form, as the client sent it
    rest: str  # path after the routing prefix
    facts: ClientFacts
    expect_backend: str | None = None
    hand_over_to: str | None = None
    """A browser's first visit with the token in its URL: redirect here, the token moved to a cookie."""


def bearer(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def token_from_headers(cookie: str | None, authorization: str | None) -> str | None:
    """The connection token of a request routed without it in the path."""
    if cookie:
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and value:
                return value
    return bearer(authorization) if authorization else None


def tokens_to_recheck(changes: list[Change]) -> Callable[[str], bool] | None:
    """Of the backends with something open, those whose tokens must be verified again after these
    changes: the ones a revocation names, or every one when a signing key changed; None when no
    token can have stopped verifying."""
    if any(c.kind is ChangeKind.SIGNING_KEY for c in changes):
        return lambda _backend_id: True
    named = {
        str(c.body["backend_id"])
        for c in changes
        if c.kind is ChangeKind.REVOCATION and c.body and "backend_id" in c.body
    }
    return named.__contains__ if named else None


def is_navigation(method: str, sec_fetch_mode: str | None) -> bool:
    return method == "GET" and (sec_fetch_mode or "").strip().lower() == "navigate"


def split_path(path: str) -> tuple[str, str]:
    """(first segment, the rest from its slash on, query included)."""
    cut = len(path)
    for sep in ("/", "?"):
        at = path.find(sep, 1)
        if at >= 0:
            cut = min(cut, at)
    rest = path[cut:]
    if not rest.startswith("/"):
        rest = "/" + rest
    return path[1:cut], rest


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
        policy: ForwardingPolicy,
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
        self.policy = policy
        self.fast_path: FastPathStats | None = None  # set once the raw-transport path is listening
        self.on_ready_wait: Callable[[float], None] = lambda _s: None
        """Told how long a request waited for its backend to be known and ready (telemetry)."""
        self.served_full = 0  # proxied requests served by this (aiohttp) path
        self._replica_changed = asyncio.Event()
        self._verified: dict[str, ConnectionClaims] = {}
        self._sockets: dict[str, dict[web.WebSocketResponse, str]] = {}  # per backend: socket → its token
        self._streams: dict[str, dict[asyncio.Task[Any], str]] = {}  # per backend: a response being sent → its token
        self._closing: set[asyncio.Future[Any]] = set()

    # ---- routing --------------------------------------------------------------------------------

    def subdomain_of(self, host: str) -> str | None:
        """The backend id a `Host` names under the edge domain, if it does."""
        if self.edge_domain is None:
            return None
        name = host.rsplit(":", 1)[0].lower() if not host.endswith("]") else host.lower()
        suffix = "." + self.edge_domain
        if name.endswith(suffix) and name.count(".") == self.edge_domain.count(".") + 1:
            return name[: -len(suffix)]
        return None

    def subdomain_backend(self, request: web.Request) -> str | None:
        return self.subdomain_of(request.headers.get("Host", ""))

    def incoming(
        self,
        target: str,
        host: str,
        cookie: str | None,
        authorization: str | None,
        peer: str,
        navigation: bool = False,
    ) -> Incoming:
        """Routing of one request: which token, and which path the backend is asked for.
        `navigation`: a browser's GET of a page (`Sec-Fetch-Mode: navigate`)."""
        path = origin_form(target)
        facts = ClientFacts(peer=peer)
        backend_id = self.subdomain_of(host)
        first, rest = split_path(path)
        if backend_id is not None:
            subdomain = ClientFacts(peer=peer, subdomain=True)
            if first.startswith("v1."):  # the subdomain URL connect answered: hand the token over
                return Incoming(first, path, rest, subdomain, backend_id, hand_over_to=rest)
            token = token_from_headers(cookie, authorization)
            if not token:
                raise Unauthorized("connection token required (cookie meridian_token or Authorization)")
            return Incoming(token, path, path, subdomain, backend_id)
        if first.startswith("v1."):
            token_path = ClientFacts(peer=peer, token_in_path=True)
            incoming = Incoming(first, path, rest, token_path)
            if navigation:
                claims = self.verify(first)
                incoming = Incoming(first, path, rest, token_path, hand_over_to=base_path(claims.backend_id) + rest)
            return incoming
        if BACKEND_ID.match(first):
            token = token_from_headers(cookie, authorization)
            if not token:
                raise Unauthorized("connection token required (cookie meridian_token or Authorization)")
            return Incoming(token, path, rest, facts, first)
        raise Unauthorized("invalid connection token")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        h = request.headers
        incoming = self.incoming(
            request.raw_path,
            h.get("Host", ""),
            h.get("Cookie"),
            h.get("Authorization"),
            request.remote or "",
            navigation=is_navigation(request.method, h.get("Sec-Fetch-Mode")),
        )
        if incoming.hand_over_to is not None:
            return self._hand_token_over(incoming)
        try:
            target = await self.resolve(incoming, list(h.items()))
        except SupersededRedirect as redirect:
            return redirect.response()
        self.served_full += 1
        self.activity.begin(target.backend_id)
        try:
            if h.get("Upgrade", "").lower() == "websocket":
                return await self._websocket(request, target, incoming)
            with _held(self._streams, target.backend_id, asyncio.current_task(), incoming.token):
                return await self._http(request, target, incoming)
        finally:
            self.activity.end(target.backend_id)

    def _hand_token_over(self, incoming: Incoming) -> web.Response:
        """The token moves from the URL to an HttpOnly cookie scoped to the backend (its host under
        subdomain routing, its base path under path routing), and the browser lands on the clean URL."""
        claims = self.verify(incoming.token)
        if incoming.expect_backend is not None and claims.backend_id != incoming.expect_backend:
            raise Unauthorized("connection token is for another backend")
        assert incoming.hand_over_to is not None
        scope = "/" if incoming.facts.subdomain else base_path(claims.backend_id)
        landing = incoming.hand_over_to
        backend = self.replica.backend(claims.backend_id)
        if incoming.facts.subdomain and backend is not None and not self.strip_prefix(backend):
            landing = base_path(claims.backend_id) + landing  # the app's own URLs carry its base path
        max_age = max(0, claims.expires_at - int(time.time()))
        cookie = f"{TOKEN_COOKIE}={incoming.token}; Path={scope}; Max-Age={max_age}; HttpOnly; SameSite=Lax"
        headers = {
            "Location": landing,
            "Set-Cookie": cookie,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        }
        return web.Response(status=303, headers=headers)

    def on_backend_stopping(self, backend_id: str, reason: TerminationReason) -> None:
        """Drone stop listener: a superseded backend's WebSockets close with 4000 `superseded`
        before its process goes (the client knows to reconnect through connect)."""
        if reason is not TerminationReason.SUPERSEDED:
            return
        if self.fast_path is not None:
            self.fast_path.end_websockets_of(backend_id, CLOSE_SUPERSEDED, REASON_SUPERSEDED)
        for ws in list(self._sockets.get(backend_id, ())):
            self._close_socket(ws, CLOSE_SUPERSEDED, REASON_SUPERSEDED)

    def _close_socket(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        task = asyncio.ensure_future(ws.close(code=code, message=reason.encode()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def on_changes(self, changes: list[Change]) -> None:
        """Replica listener: wake requests waiting for a backend the replica did not know yet,
        forget verified tokens when keys or revocations change, and end what this path holds open
        with a token that stopped verifying (the fast path ends its own)."""
        recheck = tokens_to_recheck(changes)
        if recheck is not None:
            self._verified.clear()
            self._end_revoked(recheck)
        self._replica_changed.set()
        self._replica_changed = asyncio.Event()

    def still_valid(self, token: str) -> bool:
        """Whether a token still verifies now (signature, expiry, revocations), uncached."""
        try:
            verify_connection_token(self.replica, token)
        except Unauthorized:
            return False
        return True

    def _end_revoked(self, recheck: Callable[[str], bool]) -> None:
        """A WebSocket opened with a revoked token closes with 4001 `revoked`; a response still
        being sent with one is cut (its handler cancelled, the connection closed)."""
        for backend_id in [b for b in self._sockets if recheck(b)]:
            for ws, token in list(self._sockets.get(backend_id, {}).items()):
                if not self.still_valid(token):
                    self._close_socket(ws, CLOSE_REVOKED, REASON_REVOKED)
        for backend_id in [b for b in self._streams if recheck(b)]:
            for task, token in list(self._streams.get(backend_id, {}).items()):
                if not self.still_valid(token):
                    task.cancel()

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
        while self.drone.known_backend(claims.backend_id) is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._replica_changed.wait()

    def backend_route(self, backend: BackendState, claims: ConnectionClaims) -> BackendRoute:
        local = self.drone.local.get(backend.id)
        return BackendRoute(
            backend_id=backend.id,
            region=self.region,
            secret=backend.secret,
            user=claims.user,
            base_path=base_path(backend.id),
            strip_prefix=local.template.strip_prefix if local is not None else True,
        )

    def _spec(self, backend: BackendState) -> dict[str, Any]:
        local = self.drone.local.get(backend.id)
        if local is not None:
            return local.template.model_dump()
        template = self.replica.template(backend.template_id)
        return template.spec.model_dump() if template else {}

    def body_cap(self, backend: BackendState) -> int:
        """The edge's cap, or the template's when it sets one."""
        local = self.drone.local.get(backend.id)
        spec_cap = local.template.max_body_bytes if local is not None else self._spec(backend).get("max_body_bytes")
        return int(spec_cap) if spec_cap else self.max_body_bytes

    def strip_prefix(self, backend: BackendState) -> bool:
        return bool(self._spec(backend).get("strip_prefix", True))

    async def resolve(self, incoming: Incoming, headers: list[tuple[str, str]]) -> Target:
        """Where the request goes, waiting (bounded) for a backend that is starting."""
        claims = self.verify(incoming.token)
        if incoming.expect_backend is not None and claims.backend_id != incoming.expect_backend:
            raise Unauthorized("connection token is for another backend")
        waited_from = None
        if self.drone.known_backend(claims.backend_id) is None:
            waited_from = time.perf_counter()
            await self._known_backend(claims)
        backend = self.drone.known_backend(claims.backend_id)
        if backend is None or backend.is_terminated:
            if backend is not None:
                redirect_if_superseded(self.replica, backend, claims.user, incoming.rest)
            raise BackendGone(f"backend {claims.backend_id} is gone")
        if backend.node_id != self.node_id:
            return self._remote_target(headers, backend)
        local = self.drone.local.get(backend.id)
        if local is None or not local.settled.is_set():
            waited_from = waited_from or time.perf_counter()
            local = await self.drone.wait_settled(backend.id, self.ready_wait_s)
        if waited_from is not None:
            self.on_ready_wait(time.perf_counter() - waited_from)
        if local is None:
            raise BackendNotReady(f"backend {backend.id} is not ready yet; retry", retry_after_s=1.0)
        if local.address is None or not local.status.is_live:
            raise BackendGone(f"backend {backend.id} is gone")
        route = self.backend_route(backend, claims)
        return Target(backend.id, local.address, route, backend.secret, self.body_cap(backend))

    def _remote_target(self, headers: list[tuple[str, str]], backend: BackendState) -> Target:
        if is_proven_hop(headers, backend.secret):  # one hop at most
            raise BackendGone(f"backend {backend.id} is not on this node")
        node = self.replica.node(backend.node_id)
        if node is None:
            raise BackendGone(f"backend {backend.id} is on an unknown node")
        address = node.address.rstrip("/").split("://", 1)[-1]
        return Target(backend.id, address, None, backend.secret, self.body_cap(backend))

    def upstream(
        self, incoming: Incoming, target: Target, headers: list[tuple[str, str]]
    ) -> tuple[str, list[tuple[str, str]], ResponseRewrite | None]:
        """(path, headers) of the upstream request as the policy decides them, and how the answer's
        head is rewritten (by the owning edge only: None on a hop)."""
        if target.route is None:
            # the request as the client sent it: the owning edge routes it the same way (a subdomain
            # or base-path request keeps its token where it was, in a cookie or Authorization)
            return incoming.path, self.policy.to_edge(headers, incoming.facts, target.secret), None
        facts = facts_from_hop(headers, target.secret, incoming.facts)
        path = self.policy.upstream_path(incoming.rest, target.route, facts)
        rewrite = ResponseRewrite.of(target.route, facts, incoming.token)
        return path, self.policy.to_backend(headers, facts, target.route, incoming.token), rewrite

    # ---- HTTP -----------------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request, cap: int) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.content.iter_any():
            seen += len(chunk)
            if seen > cap:
                raise PayloadTooLarge(f"request body is larger than {cap} bytes")
            yield chunk

    async def _http(self, request: web.Request, target: Target, incoming: Incoming) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > target.max_body_bytes:
            raise PayloadTooLarge(f"request body is larger than {target.max_body_bytes} bytes")
        data = self._body(request, target.max_body_bytes) if request.body_exists else None
        path, headers, rewrite = self.upstream(incoming, target, list(request.headers.items()))
        try:
            upstream = await self.session.request(
                request.method,
                URL(f"http://{target.address}{path}", encoded=True),
                headers=CIMultiDict(headers),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                timeout=NO_TOTAL_TIMEOUT,
                skip_auto_headers=SKIP_AUTO_HEADERS,
            )
        except PayloadTooLarge:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnreachable(f"backend {target.backend_id} is unreachable") from exc
        async with upstream:
            down = CIMultiDict(self.policy.to_client(upstream.headers.items(), rewrite))
            for framing in ("Content-Length", "Transfer-Encoding"):
                down.popall(framing, None)
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY and request.method != "HEAD":
                body = await upstream.read()
                self.activity.touch(target.backend_id)
                small = web.Response(status=upstream.status, reason=upstream.reason, body=body)
                small.headers.extend(down)
                return small
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(down)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                    self.activity.touch(target.backend_id)
            except (aiohttp.ClientPayloadError, ConnectionResetError) as exc:
                log.debug("stream of backend %s ended early: %s", target.backend_id, type(exc).__name__)
                if request.transport is not None:
                    request.transport.close()  # the client sees the answer cut, not a clean end
                return response
            await response.write_eof()
            return response

    # ---- WebSocket ------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request, target: Target, incoming: Incoming) -> web.StreamResponse:
        path, headers, _ = self.upstream(incoming, target, list(request.headers.items()))
        out = CIMultiDict(headers)
        for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
            out.popall(name, None)
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        out.popall("Sec-WebSocket-Protocol", None)
        try:
            upstream = await self.session.ws_connect(
                URL(f"ws://{target.address}{path}", encoded=True),
                headers=out,
                protocols=protocols,
                autoping=False,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=10),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise BackendUnreachable(f"backend {target.backend_id} refused the WebSocket ({exc.status})") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnreachable(f"backend {target.backend_id} refused the WebSocket") from exc
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), autoping=False, max_msg_size=0
        )
        await client.prepare(request)
        try:
            with _held(self._sockets, target.backend_id, client, incoming.token):
                await _pump_both(client, upstream, lambda: self.activity.touch(target.backend_id))
        finally:
            await upstream.close()
            await client.close(code=CLOSE_BACKEND_GONE, message=b"backend closed the connection")
        return client


@contextlib.contextmanager
def _held(registry: dict[str, dict[Any, str]], backend_id: str, item: object, token: str) -> Iterator[None]:
    """`item` (a socket, a handler task) is open for `backend_id` with `token` while inside."""
    held = registry.setdefault(backend_id, {})
    held[item] = token
    try:
        yield
    finally:
        held.pop(item, None)
        if not held:
            registry.pop(backend_id, None)


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
_NOT_ON_THE_WIRE = frozenset((1005, 1006, 1015))
"""Close codes that describe a missing close frame and must never be sent in one."""


def close_code_for(code: int | None) -> int:
    return CLOSE_BACKEND_GONE if code is None or code in _NOT_ON_THE_WIRE or not 1000 <= code < 5000 else code


async def _pump(source: WebSocket, sink: WebSocket, touch: Callable[[], None]) -> None:
    """Relay messages until `source` closes, then close `sink` with its code and reason (1011 in
    place of a code that must not be on the wire)."""
    reason = ""
    while True:
        msg = await source.receive()
        if msg.type is WSMsgType.CLOSE:
            reason = msg.extra or ""
            break
        if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
        touch()
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type is WSMsgType.PONG:
            await sink.pong(msg.data)
    code = close_code_for(source.close_code)
    if code != source.close_code:
        reason = "backend closed the connection"
    await sink.close(code=code, message=reason.encode())


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
