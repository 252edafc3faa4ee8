"""The proxy's data path on raw asyncio transports, with the httptools (llhttp) parser and a pool
of kept-alive upstream connections: HTTP/1.1 to local backends and to the edges that own other
backends, pipelined requests answered in order, `Expect: 100-continue` answered by the edge, and
WebSocket upgrades spliced byte for byte once the backend has switched protocols.

What it does not serve — the edge's own API, tokens that do not verify, bodies declared over the
cap, a request it cannot parse — is handed, with its bytes, to the aiohttp application
(edge/proxy.py answers those with the same policy), which then owns the connection.
Every header it sends is what edge/forwarding.py decided; this module only serialises.

Framing: a request body is re-framed from the parser's decoded chunks (same Content-Length, or
re-chunked); a response is forwarded as the backend sent it after its head was rewritten.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

from edge.activity import Activity
from edge.drone import Drone
from edge.forwarding import ForwardingPolicy, ResponseRewrite
from edge.proxy import Incoming, Proxy, Target, is_navigation, tokens_to_recheck
from edge.supersede import SupersededRedirect
from edge.websocket_frames import FrameBoundary, close_frame
from sync.close_codes import (
    CLOSE_BACKEND_GONE,
    CLOSE_GOING_AWAY,
    CLOSE_REVOKED,
    CLOSE_SUPERSEDED,
    REASON_REVOKED,
    REASON_SUPERSEDED,
)
from sync.errors import MeridianError, PayloadTooLarge
from sync.models import BackendStatus, Change, ChangeKind, TerminationReason

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
_IDLE_UPSTREAMS_KEPT = 64
_HIGH_WATER = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {400: b"Bad Request", 401: b"Unauthorized", 410: b"Gone", 413: b"Payload Too Large"}
_REASONS.update({502: b"Bad Gateway", 503: b"Service Unavailable"})


@dataclass
class Limits:
    """Per-edge limits of the client side (EdgeSettings has their descriptions)."""

    max_body_bytes: int
    head_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int


@dataclass
class _Request:
    """One request head as parsed; a request pipelined behind another keeps its body here until
    its turn comes."""

    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    method: bytes = b""
    keep_alive: bool = True
    queued: bool = False
    body: list[bytes] = field(default_factory=list)
    body_bytes: int = 0
    complete: bool = False

    def serialised(self) -> bytes:
        """The request's bytes again (for a hand-over of a complete pipelined request)."""
        lines = [b"%b %b HTTP/1.1" % (self.method, self.url)]
        lines += [n + b": " + v for n, v in self.headers if n.lower() not in (b"transfer-encoding", b"content-length")]
        body = b"".join(self.body)
        if body or self.method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class _Exchange:
    """One proxied request/response (or WebSocket, once spliced)."""

    chunked_request: bool
    head_only: bool  # a HEAD request: the response has no body whatever its headers say
    client_keep_alive: bool
    websocket: bool = False
    expect_continue: bool = False
    backend_id: str | None = None  # known once the target is resolved
    token: str = ""  # the connection token it was opened with: checked again on revocations
    upstream: _Upstream | None = None
    pending: list[bytes] = field(default_factory=list)  # request bytes written before upstream was ready
    request_done: bool = False
    response_started: bool = False
    address: str = ""
    max_body_bytes: int = 0
    rewrite: ResponseRewrite | None = None
    retry_head: bytes | None = None
    """A bodiless request sent on a pooled connection: resent once on a new connection if the
    pooled one turns out to have been closed by the backend before answering."""


class FastPath:
    """Shared by every connection of one edge."""

    def __init__(self, *, proxy: Proxy, drone: Drone, activity: Activity, limits: Limits) -> None:
        self.proxy = proxy
        self.drone = drone
        self.activity = activity
        self.limits = limits
        self.max_body_bytes = limits.max_body_bytes
        self.idle: dict[str, list[_Upstream]] = {}
        self.hand_over: Callable[[], asyncio.Protocol] | None = None
        self.handed_over: Callable[[], int] = lambda: 0
        """How many connections the aiohttp application holds (all of them came through here)."""
        self.clients: set[ClientProtocol] = set()
        self.served_fast = 0

    def open_connections(self) -> int:
        """Every open client connection of the edge: this path's and those handed to aiohttp."""
        return len(self.clients) + self.handed_over()

    def fast_path_share(self) -> float | None:
        """Of the proxied requests, the share served here rather than by the aiohttp path."""
        total = self.served_fast + self.proxy.served_full
        return round(self.served_fast / total, 4) if total else None

    def route(self, incoming: Incoming) -> Target | None:
        """The target when it is known at once (a ready local backend), else None."""
        try:
            claims = self.proxy.verify(incoming.token)
        except MeridianError:
            return None
        if incoming.expect_backend is not None and claims.backend_id != incoming.expect_backend:
            return None
        local = self.drone.local.get(claims.backend_id)
        if local is None or local.status is not BackendStatus.READY or local.address is None:
            return None
        backend = self.drone.known_backend(claims.backend_id)
        if backend is None or backend.is_terminated:
            return None
        route = self.proxy.backend_route(backend, claims)
        return Target(claims.backend_id, local.address, route, backend.secret, self.proxy.body_cap(backend))

    def on_changes(self, changes: list[Change]) -> None:
        """Replica listener: a backend that ended takes its spliced WebSockets with it, each closed
        with a code that says why (4000 `superseded`: the key's other backend won); a revoked token
        takes what was opened with it (4001 `revoked`, a stream cut)."""
        recheck = tokens_to_recheck(changes)
        if recheck is not None:
            self._end_revoked(recheck)
        ended = {
            c.id: (c.body or {}).get("termination_reason")
            for c in changes
            if c.kind is ChangeKind.BACKEND and (c.body or {}).get("status") == BackendStatus.TERMINATED.value
        }
        if not ended:
            return
        for client in list(self.clients):
            ex = client.exchange
            if client.spliced and ex is not None and ex.backend_id in ended:
                if ended[ex.backend_id] == TerminationReason.SUPERSEDED.value:
                    client.end_websocket(CLOSE_SUPERSEDED, REASON_SUPERSEDED)
                else:
                    client.end_websocket(CLOSE_GOING_AWAY, "backend stopped")

    def _end_revoked(self, recheck: Callable[[str], bool]) -> None:
        valid: dict[str, bool] = {}  # many sockets share a token: verify each token once
        for client in list(self.clients):
            ex = client.exchange
            if ex is None or ex.backend_id is None or not ex.token or not recheck(ex.backend_id):
                continue
            if ex.token not in valid:
                valid[ex.token] = self.proxy.still_valid(ex.token)
            if not valid[ex.token]:
                client.end_revoked()

    def take_upstream(self, address: str) -> _Upstream | None:
        pool = self.idle.get(address)
        while pool:
            up = pool.pop()
            if not up.closed:
                return up
        return None

    def give_back(self, up: _Upstream) -> None:
        pool = self.idle.setdefault(up.address, [])
        if len(pool) < _IDLE_UPSTREAMS_KEPT and not up.closed:
            up.client = None
            pool.append(up)
        else:
            up.close()

    def end_websockets_of(self, backend_id: str, code: int, reason: str) -> int:
        """End the spliced WebSockets of one backend with a close frame (e.g. 4000 `superseded`)."""
        ended = 0
        for client in list(self.clients):
            ex = client.exchange
            if client.spliced and ex is not None and ex.backend_id == backend_id:
                client.end_websocket(code, reason)
                ended += 1
        return ended

    def close(self) -> None:
        for client in list(self.clients):
            client.end_websocket(CLOSE_GOING_AWAY, "edge shutting down")
            client._close()
        for pool in self.idle.values():
            for up in pool:
                up.close()
        self.idle.clear()


class _Upstream(asyncio.Protocol):
    """One connection to a backend or to another edge, serving one exchange at a time (kept
    alive between them), or spliced to one client after a WebSocket upgrade."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.client: ClientProtocol | None = None
        self.closed = False
        self.spliced = False
        self._head = bytearray()
        self._parser: httptools.HttpResponseParser | None = None
        self._done = False
        self._head_only = False
        self._keep_alive = True
        self._rewrite: ResponseRewrite | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.client is not None:
            client, self.client = self.client, None
            client.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading()

    def begin(self, client: ClientProtocol, head_only: bool, rewrite: ResponseRewrite | None) -> None:
        self.client = client
        self._rewrite = rewrite
        self._head.clear()
        self._parser = None
        self._done = False
        self._head_only = head_only
        self._keep_alive = True

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        if self.spliced:
            client.send_spliced(data)
            return
        if self._parser is None:
            self._head += data
            self._read_head(client)
        else:
            client.send_body(data)
            self._feed(data)
        if self._done and self.client is client:
            self.client = None
            client.response_done(self, reusable=self._keep_alive and not self.closed)

    def _read_head(self, client: ClientProtocol) -> None:
        while True:
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self.close()
                return
            head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
            status = _status_of(head)
            if status == 101 and client.wants_upgrade():
                self.spliced = True
                self._head.clear()
                client.switched_protocols(_rewrite_response_head(head, self._rewrite, upgrade=True), rest)
                return
            if 100 <= status < 200:  # informational (100, 103): relayed, the real answer follows
                client.send_raw(_rewrite_response_head(head, self._rewrite))
                self._head = bytearray(rest)
                continue
            self._head.clear()
            self._parser = httptools.HttpResponseParser(self)
            self._feed(head)
            self._keep_alive = self._parser.should_keep_alive()
            client.send_response_head(_rewrite_response_head(head, self._rewrite))
            if self._head_only or status in (204, 304):
                self._done = True
            elif rest:
                client.send_body(rest)
                self._feed(rest)
            return

    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    # httptools callbacks
    def on_message_complete(self) -> None:
        self._done = True


def _status_of(head: bytes) -> int:
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _rewrite_response_head(head: bytes, rewrite: ResponseRewrite | None, upgrade: bool = False) -> bytes:
    """The response head as the forwarding policy passes it to the client."""
    lines = head[:-4].split(b"\r\n")
    pairs = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        pairs.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    kept = [lines[0]]
    kept += [n.encode("latin-1") + b": " + v.encode("latin-1") for n, v in ForwardingPolicy.to_client(pairs, rewrite)]
    if upgrade:
        kept += [b"Connection: Upgrade", b"Upgrade: websocket"]
    return b"\r\n".join(kept) + b"\r\n\r\n"


class ClientProtocol(asyncio.Protocol):
    """One client connection: requests the fast path serves, in order, until one it cannot."""

    def __init__(self, fast: FastPath) -> None:
        self.fast = fast
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.raw = bytearray()  # bytes of the request being parsed, for a hand-over
        self.current = _Request()
        self.queue: deque[_Request] = deque()
        self.exchange: _Exchange | None = None
        self.reading_paused = False
        self.peer = ""
        self.parser_in_body = False
        self.spliced = False
        self._frames: FrameBoundary | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        peer = self.transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if self.fast.open_connections() >= self.fast.limits.max_connections:
            self._answer(503, _error_body("too_many_requests", "this edge holds its most open connections"))
            self._close()
            return
        self.fast.clients.add(self)
        self._arm(self.fast.limits.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.fast.clients.discard(self)
        ex, self.exchange = self.exchange, None
        if ex is not None:
            if ex.backend_id is not None:
                self.fast.activity.end(ex.backend_id)
            if ex.upstream is not None:
                ex.upstream.client = None
                ex.upstream.close()  # mid-exchange: its state is unknown

    def pause_writing(self) -> None:
        if self.exchange is not None and self.exchange.upstream and self.exchange.upstream.transport:
            self.exchange.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None and self.exchange.upstream and self.exchange.upstream.transport:
            self.exchange.upstream.transport.resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.spliced:
            ex = self.exchange
            if ex is not None and ex.upstream is not None:
                ex.upstream.write(data)
                if ex.backend_id is not None:
                    self.fast.activity.touch(ex.backend_id)
            return
        if self._awaiting_head and self._timer is not None and not self.raw:
            self._arm(self.fast.limits.head_timeout_s)  # the keep-alive wait is over: a head is coming
        if self.exchange is None and not self.queue:
            self.raw += data
            if len(self.raw) > _MAX_HEAD and not self.parser_in_body and self.raw.find(b"\r\n\r\n", 0, _MAX_HEAD) < 0:
                self._hand_over(bytes(self.raw))  # an oversized head: the full server refuses it
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[int(upgrade.args[0]) :])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HandOver):
                self._hand_over(bytes(self.raw))
            else:
                log.error("fast path failed on a request", exc_info=exc.__context__)
                self._close()
        except httptools.HttpParserError:
            # Let the full server answer what the fast parser refused (it writes the error body).
            if self.exchange is None and not self.queue:
                self._hand_over(bytes(self.raw))
            else:
                self._close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.parser_in_body = False
        self.current = _Request(queued=self.exchange is not None or bool(self.queue))
        if self.current.queued:
            self.queue.append(self.current)

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.parser_in_body = True
        self._awaiting_head = False
        self._disarm()
        req = self.current
        req.method = self.parser.get_method()
        req.keep_alive = self.parser.should_keep_alive()
        if req.queued or self.parser.should_upgrade():
            return
        if self._start(req) is None:
            raise _HandOver
        self.raw.clear()

    def on_body(self, body: bytes) -> None:
        req = self.current
        req.body_bytes += len(body)
        ex = self.exchange
        cap = ex.max_body_bytes if ex is not None and ex.max_body_bytes and not req.queued else self.fast.max_body_bytes
        if req.body_bytes > cap:
            if self.exchange is None or not self.exchange.response_started:
                self._answer(413, _error_body("payload_too_large", "request body is too large"))
            self._close()
            return
        if req.queued:
            req.body.append(body)
        else:
            self._body(body)

    def on_message_complete(self) -> None:
        req = self.current
        if req.queued:
            req.complete = True
        elif self.exchange is not None:
            self._request_complete()
        self.pause_reading()  # the next request waits until this response is out

    # ---- the exchange -----------------------------------------------------------------------

    def _start(self, req: _Request, websocket: bool = False) -> _Exchange | None:
        """Begin proxying this request if the fast path can; None hands it over."""
        headers = [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in req.headers]
        host = cookie = authorization = fetch_mode = None
        chunked = expect = False
        length = None
        for name, value in headers:
            lower = name.lower()
            if lower == "host":
                host = value
            elif lower == "cookie":
                cookie = value if cookie is None else f"{cookie}; {value}"
            elif lower == "authorization":
                authorization = value
            elif lower == "sec-fetch-mode":
                fetch_mode = value
            elif lower == "expect":
                if value.strip().lower() != "100-continue":
                    return None
                expect = True
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "content-length":
                length = int(value) if value.strip().isdigit() else None
        try:
            incoming = self.fast.proxy.incoming(
                req.url.decode("utf-8", "surrogateescape"),
                host or "",
                cookie,
                authorization,
                self.peer,
                navigation=is_navigation(req.method.decode("latin-1"), fetch_mode),
            )
        except MeridianError:  # the full path answers it (with the same error)
            return None
        if incoming.hand_over_to is not None:
            return None
        ex = _Exchange(
            chunked_request=chunked,
            head_only=req.method == b"HEAD",
            client_keep_alive=req.keep_alive and not websocket,
            websocket=websocket,
            expect_continue=expect,
        )
        self.exchange = ex
        target = self.fast.route(incoming)
        if target is not None:
            if length is not None and length > target.max_body_bytes:
                self.exchange = None
                return None
            try:
                self._send_head(ex, req, incoming, target, headers, length)
            except MeridianError:
                self.exchange = None
                return None
            self.fast.served_fast += 1
        else:  # starting, on another edge, or to be refused: resolved off the parser's callback
            self.pause_reading()
            asyncio.get_running_loop().create_task(self._resolve(ex, req, incoming, headers, length))
        return ex

    async def _resolve(
        self, ex: _Exchange, req: _Request, incoming: Incoming, headers: list[tuple[str, str]], length: int | None
    ) -> None:
        try:
            target = await self.fast.proxy.resolve(incoming, headers)
            if self.exchange is not ex:
                return
            if length is not None and length > target.max_body_bytes:
                raise PayloadTooLarge(f"request body is larger than {target.max_body_bytes} bytes")
            self._send_head(ex, req, incoming, target, headers, length)
        except MeridianError as exc:
            if self.exchange is ex:
                self._answer(exc.status, json.dumps(exc.to_body()).encode(), exc.retry_after_s)
                self.exchange = None
                self._close()
            return
        except SupersededRedirect as redirect:
            if self.exchange is ex and self.transport is not None and not self.transport.is_closing():
                self.transport.write(redirect.raw())
                self.exchange = None
                self._close()
            return
        self.fast.served_fast += 1
        if not ex.request_done and ex.upstream is not None:
            self.resume_reading()

    def _send_head(
        self,
        ex: _Exchange,
        req: _Request,
        incoming: Incoming,
        target: Target,
        headers: list[tuple[str, str]],
        length: int | None,
    ) -> None:
        path, upstream_headers, ex.rewrite = self.fast.proxy.upstream(incoming, target, headers)
        head = _request_head(req.method, path, upstream_headers, ex.chunked_request, length, ex.websocket)
        ex.backend_id = target.backend_id
        ex.token = incoming.token
        ex.address = target.address
        ex.max_body_bytes = target.max_body_bytes
        self.fast.activity.begin(target.backend_id)
        if ex.expect_continue and not ex.request_done:
            self.send_raw(_CONTINUE)
        up = None if ex.websocket else self.fast.take_upstream(target.address)
        if up is not None:
            if not ex.chunked_request and not length:
                ex.retry_head = head
            self._attach(up, head + b"".join(ex.pending))
            ex.pending.clear()
        else:
            ex.pending.insert(0, head)
            self.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(target.address))

    async def _connect(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        ex = self.exchange
        try:
            _, up = await asyncio.get_running_loop().create_connection(lambda: _Upstream(address), host, int(port))
        except OSError:
            if ex is not None and self.exchange is ex:
                self._answer(502, _error_body("backend_unreachable", "backend is unreachable"))
                self._finish(ex, close=True)
            return
        if ex is None or self.exchange is not ex:
            up.close()
            return
        pending = b"".join(ex.pending)
        ex.pending.clear()
        self._attach(up, pending)
        if not ex.request_done and not ex.websocket:
            self.resume_reading()

    def _attach(self, up: _Upstream, first: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        ex.upstream = up
        up.begin(self, ex.head_only, ex.rewrite)
        up.write(first)

    def _body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        self._to_upstream(b"%x\r\n%b\r\n" % (len(body), body) if ex.chunked_request else body)

    def _request_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        ex.request_done = True
        if ex.chunked_request:
            self._to_upstream(b"0\r\n\r\n")

    def _to_upstream(self, data: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        if ex.upstream is None:
            ex.pending.append(data)
        else:
            ex.upstream.write(data)

    # ---- WebSocket ----------------------------------------------------------------------------

    def _upgrade(self, rest: bytes) -> None:
        """An Upgrade request: the head goes to the backend; if it switches protocols, the two
        sockets are spliced."""
        req = self.current
        if self.exchange is not None or self.queue or req.queued:
            self._close()  # an upgrade pipelined behind another request: no clean boundary
            return
        upgrade = next((v for n, v in req.headers if n.lower() == b"upgrade"), b"")
        if upgrade.strip().lower() != b"websocket" or self._start(req, websocket=True) is None:
            self._hand_over(bytes(self.raw))
            return
        self.raw.clear()
        self.exchange_request_done()
        if rest:
            self._to_upstream(rest)

    def exchange_request_done(self) -> None:
        if self.exchange is not None:
            self.exchange.request_done = True

    def wants_upgrade(self) -> bool:
        return self.exchange is not None and self.exchange.websocket

    def switched_protocols(self, head: bytes, rest: bytes) -> None:
        self.spliced = True
        self._frames = FrameBoundary()
        self.send_raw(head)
        if self.exchange is not None:
            self.exchange.response_started = True
        self.resume_reading()
        if rest:
            self.send_spliced(rest)

    def send_spliced(self, data: bytes) -> None:
        assert self._frames is not None
        self._frames.feed(data)
        if self.transport is not None:
            self.transport.write(data)
        if self.exchange is not None and self.exchange.backend_id is not None:
            self.fast.activity.touch(self.exchange.backend_id)

    def end_websocket(self, code: int, reason: str) -> None:
        """End a spliced WebSocket from the edge's side with a close frame the client can read."""
        if not self.spliced or self._frames is None or self.transport is None or self.transport.is_closing():
            return
        finish = self._frames.finish()
        if finish is not None:
            self.transport.write(finish + close_frame(code, reason))
        self._close()

    def end_revoked(self) -> None:
        """The token of the current exchange no longer verifies: a WebSocket gets 4001 `revoked`,
        a response not yet begun 401, one still streaming is cut."""
        ex = self.exchange
        if self.spliced:
            self.end_websocket(CLOSE_REVOKED, REASON_REVOKED)
            return
        if ex is not None and not ex.response_started:
            self._answer(401, _error_body("unauthorized", "connection token revoked"))
        self._close()

    # ---- called by the upstream ---------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def send_response_head(self, head: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_started = True
        if self.transport is not None:
            self.transport.write(head)

    def send_body(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        if self.exchange is not None and self.exchange.backend_id is not None:
            self.fast.activity.touch(self.exchange.backend_id)

    def response_done(self, up: _Upstream, reusable: bool) -> None:
        ex = self.exchange
        if ex is None:
            up.close()
            return
        if reusable and ex.request_done and not ex.websocket:
            self.fast.give_back(up)
        else:
            up.close()
        self._finish(ex, close=ex.websocket)

    def upstream_lost(self, up: _Upstream) -> None:
        ex = self.exchange
        if ex is None:
            return
        if self.spliced:
            self.end_websocket(CLOSE_BACKEND_GONE, "backend closed the connection")
            return
        if ex.retry_head is not None and not ex.response_started:
            ex.pending.append(ex.retry_head)
            ex.retry_head = None
            ex.upstream = None
            self.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(ex.address))
            return
        if not ex.response_started:
            self._answer(502, _error_body("backend_unreachable", "backend closed the connection"))
        self._finish(ex, close=True)

    def _finish(self, ex: _Exchange, close: bool = False) -> None:
        self.exchange = None
        if ex.backend_id is not None:
            self.fast.activity.end(ex.backend_id)
        if close or not ex.client_keep_alive or not ex.request_done:
            self._close()
            return
        if self.queue:
            self._next_queued()
            return
        self._awaiting_head = True
        self._arm(self.fast.limits.keepalive_timeout_s)
        self.resume_reading()

    def _next_queued(self) -> None:
        """The next pipelined request, now that the one before it was answered."""
        req = self.queue.popleft()
        req.queued = False
        if self._start(req) is None:
            if not req.complete or any(not q.complete for q in self.queue):
                self._close()  # its bytes are partly parsed already: nothing clean to hand over
                return
            rest = b"".join(q.serialised() for q in self.queue)
            self.queue.clear()
            self._hand_over(req.serialised() + rest)
            return
        for chunk in req.body:
            self._body(chunk)
        req.body.clear()
        if req.complete:
            self._request_complete()
            if self.queue:
                return  # its response will bring the next one
        self.resume_reading()

    # ---- the connection ---------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, self._close)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer(self, status: int, body: bytes, retry_after_s: float | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = _REASONS.get(status, b"Error")
        retry = b"Retry-After: %d\r\n" % max(1, round(retry_after_s)) if retry_after_s else b""
        self.transport.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%bConnection: close\r\n\r\n%b"
            % (status, reason, len(body), retry, body)
        )

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _hand_over(self, raw: bytes) -> None:
        """Give the connection, and the bytes of the current request, to the aiohttp application."""
        assert self.transport is not None and self.fast.hand_over is not None
        if self.exchange is not None:
            self._close()  # mid-exchange: no clean boundary to hand over at
            return
        self._disarm()
        self.fast.clients.discard(self)
        if self.reading_paused:
            self.resume_reading()
        protocol = self.fast.hand_over()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(raw)
        self.raw.clear()


class _HandOver(Exception):
    pass


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "fields": {}}}).encode()


def _request_head(
    method: bytes, path: str, headers: list[tuple[str, str]], chunked: bool, length: int | None, websocket: bool
) -> bytes:
    """Serialises what the forwarding policy decided, framing added."""
    out = [b"%b %b HTTP/1.1" % (method, path.encode("utf-8", "surrogateescape"))]
    for name, value in headers:
        out.append(name.encode("utf-8", "surrogateescape") + b": " + value.encode("utf-8", "surrogateescape"))
    if websocket:
        out += [b"Connection: Upgrade", b"Upgrade: websocket"]
    elif chunked:
        out.append(b"Transfer-Encoding: chunked")
    elif length is not None:
        out.append(b"Content-Length: %d" % length)
    return b"\r\n".join(out) + b"\r\n\r\n"
