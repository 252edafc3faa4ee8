"""The proxy's fast path: plain HTTP/1.1 requests for a ready local backend, handled on raw asyncio
transports with the httptools (llhttp) parser, over a pool of kept-alive backend connections.

Everything else — the edge's API, WebSocket upgrades, subdomain routing, tokens that do not
verify, backends that are starting, on another node or gone, `Expect: 100-continue`, bodies
declared over the cap — is handed, with the bytes read so far, to the aiohttp application
(edge/proxy.py has the full rules), which then owns the connection. The split exists for speed:
aiohttp's client and server cost several times what this path does per request (bench/RESULTS.md).

Framing: a request body is re-framed from the parser's decoded chunks (same Content-Length, or
re-chunked); a response is forwarded as the backend sent it after its head was rewritten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

from edge.activity import Activity
from edge.drone import Drone
from edge.forwarding import ForwardingPolicy
from edge.proxy import Incoming, Proxy, Target
from sync.errors import MeridianError
from sync.models import BackendStatus

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
_IDLE_UPSTREAMS_KEPT = 64
_HIGH_WATER = 256 * 1024
KEEPALIVE_S = 75.0
"""An idle kept-alive client connection is closed after this (aiohttp's default too)."""


@dataclass
class _Exchange:
    """One proxied request/response."""

    backend_id: str
    chunked_request: bool
    head_only: bool  # a HEAD request: the response has no body whatever its headers say
    client_keep_alive: bool
    upstream: _Upstream | None = None
    pending: list[bytes] = field(default_factory=list)  # request bytes written before upstream was ready
    request_done: bool = False
    response_started: bool = False
    address: str = ""
    retry_head: bytes | None = None
    """A bodiless request sent on a pooled connection: resent once on a new connection if the
    pooled one turns out to have been closed by the backend before answering."""


class FastPath:
    """Shared by every connection of one edge."""

    def __init__(self, *, proxy: Proxy, drone: Drone, activity: Activity, max_body_bytes: int) -> None:
        self.proxy = proxy
        self.drone = drone
        self.activity = activity
        self.max_body_bytes = max_body_bytes
        self.idle: dict[str, list[_Upstream]] = {}
        self.hand_over: Callable[[], asyncio.Protocol] | None = None
        self.clients: set[ClientProtocol] = set()

    def route(self, incoming: Incoming) -> Target | None:
        """The target when the fast path can serve the request at once (a ready local backend), else None."""
        try:
            claims = self.proxy.verify(incoming.token)
        except MeridianError:  # let the full path answer it
            return None
        if incoming.expect_backend is not None and claims.backend_id != incoming.expect_backend:
            return None
        local = self.drone.local.get(claims.backend_id)
        if local is None or local.status is not BackendStatus.READY or local.address is None:
            return None
        backend = self.proxy.replica.backend(claims.backend_id)
        if backend is None or backend["status"] == "terminated":
            return None
        return Target(
            claims.backend_id,
            local.address,
            self.proxy.backend_route(backend, claims),
            backend["secret"],
        )

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

    def close(self) -> None:
        for client in list(self.clients):
            client._close()
        for pool in self.idle.values():
            for up in pool:
                up.close()
        self.idle.clear()


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to a backend, serving one exchange at a time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.client: ClientProtocol | None = None
        self.closed = False
        self._head = bytearray()
        self._parser: httptools.HttpResponseParser | None = None
        self._done = False
        self._head_only = False
        self._keep_alive = True

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

    def begin(self, client: ClientProtocol, head_only: bool) -> None:
        self.client = client
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
        if self._parser is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self.close()
                return
            head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
            self._parser = httptools.HttpResponseParser(self)
            self._feed(head)
            if self._parser.get_status_code() < 200:  # 1xx: not supported here; give up on it
                self.close()
                return
            self._keep_alive = self._parser.should_keep_alive()
            client.send_response_head(_rewrite_response_head(head))
            if self._head_only:
                self._done = True
            elif rest:
                client.send_body(rest)
                self._feed(rest)
        else:
            client.send_body(data)
            self._feed(data)
        if self._done:
            self.client = None
            client.response_done(self, reusable=self._keep_alive and not self.closed)

    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    # httptools callbacks
    def on_message_complete(self) -> None:
        self._done = True


def _rewrite_response_head(head: bytes) -> bytes:
    """The response head as the forwarding policy passes it to the client."""
    lines = head[:-4].split(b"\r\n")
    pairs = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        pairs.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    kept = [lines[0]]
    kept += [n.encode("latin-1") + b": " + v.encode("latin-1") for n, v in ForwardingPolicy.to_client(pairs)]
    return b"\r\n".join(kept) + b"\r\n\r\n"


class ClientProtocol(asyncio.Protocol):
    """One client connection: requests the fast path can serve, until one it cannot."""

    def __init__(self, fast: FastPath) -> None:
        self.fast = fast
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.raw = bytearray()  # bytes of the request being parsed, for a hand-over
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.exchange: _Exchange | None = None
        self.handed_over = False
        self.body_bytes = 0
        self.reading_paused = False
        self.peer = ""
        self.pipelined = False
        self.parser_in_body = False
        self._idle_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        peer = self.transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.fast.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_idle_timer()
        self.fast.clients.discard(self)
        ex, self.exchange = self.exchange, None
        if ex is not None:
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
        self._cancel_idle_timer()
        if self.exchange is None:
            self.raw += data
            if len(self.raw) > _MAX_HEAD and not self.parser_in_body and self.raw.find(b"\r\n\r\n", 0, _MAX_HEAD) < 0:
                self._hand_over()  # an oversized or dribbled head: the full server refuses it
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._hand_over()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HandOver):
                self._hand_over()
            else:
                log.error("fast path failed on a request", exc_info=exc.__context__)
                self._close()
        except httptools.HttpParserError:
            # Let the full server answer what the fast parser refused (it writes the error body).
            if self.exchange is None and not self.pipelined:
                self._hand_over()
            else:
                self._close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.parser_in_body = False
        if self.exchange is not None:  # a pipelined request behind one still in flight
            self.pipelined = True
        self.url = b""
        self.headers = []
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.parser_in_body = True
        if self.pipelined:
            raise _HandOver
        ex = self._start()
        if ex is None:
            raise _HandOver
        self.raw.clear()

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.fast.max_body_bytes:
            if not ex.response_started:
                self._answer(
                    413, b'{"error":{"code":"payload_too_large","message":"request body is too large","fields":{}}}'
                )
            self._close()
            return
        self._to_upstream(b"%x\r\n%b\r\n" % (len(body), body) if ex.chunked_request else body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.request_done = True
        if ex.chunked_request:
            self._to_upstream(b"0\r\n\r\n")
        self.pause_reading()  # the next request waits until this response is out

    # ---- the exchange -----------------------------------------------------------------------

    def _start(self) -> _Exchange | None:
        """Begin proxying this request if the fast path can; None hands it over."""
        headers = [
            (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in self.headers
        ]
        host = cookie = authorization = None
        chunked = False
        length = None
        for name, value in headers:
            lower = name.lower()
            if lower == "host":
                host = value
            elif lower == "cookie":
                cookie = value if cookie is None else f"{cookie}; {value}"
            elif lower == "authorization":
                authorization = value
            elif lower == "expect" or lower == "upgrade":
                return None
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "content-length":
                length = int(value) if value.strip().isdigit() else None
        if length is not None and length > self.fast.max_body_bytes:
            return None
        try:
            incoming = self.fast.proxy.incoming(
                self.url.decode("utf-8", "surrogateescape"), host or "", cookie, authorization, self.peer
            )
            target = self.fast.route(incoming)
            if target is None:
                return None
            path, upstream_headers = self.fast.proxy.upstream(incoming, target, headers)
        except MeridianError:  # the full path answers it (with the same error)
            return None
        method = self.parser.get_method()
        ex = _Exchange(
            backend_id=target.backend_id,
            chunked_request=chunked,
            head_only=method == b"HEAD",
            client_keep_alive=self.parser.should_keep_alive(),
        )
        self.exchange = ex
        self.fast.activity.begin(target.backend_id)
        head = _request_head(method, path, upstream_headers, chunked, length)
        ex.address = target.address
        up = self.fast.take_upstream(target.address)
        if up is not None:
            if not chunked and not length:
                ex.retry_head = head
            self._attach(up, head)
        else:
            ex.pending.append(head)
            self.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(target.address))
        return ex

    async def _connect(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        ex = self.exchange
        try:
            _, up = await asyncio.get_running_loop().create_connection(lambda: _Upstream(address), host, int(port))
        except OSError:
            if ex is not None and self.exchange is ex:
                self._answer(
                    502, b'{"error":{"code":"backend_unreachable","message":"backend is unreachable","fields":{}}}'
                )
                self._finish(ex, close=True)
            return
        if ex is None or self.exchange is not ex:
            up.close()
            return
        pending = b"".join(ex.pending)
        ex.pending.clear()
        self._attach(up, pending)
        if not ex.request_done:
            self.resume_reading()

    def _attach(self, up: _Upstream, first: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        ex.upstream = up
        up.begin(self, ex.head_only)
        up.write(first)

    def _to_upstream(self, data: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        if ex.upstream is None:
            ex.pending.append(data)
        else:
            ex.upstream.write(data)

    # called by the upstream
    def send_response_head(self, head: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_started = True
        if self.transport is not None:
            self.transport.write(head)

    def send_body(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        if self.exchange is not None:
            self.fast.activity.touch(self.exchange.backend_id)

    def response_done(self, up: _Upstream, reusable: bool) -> None:
        ex = self.exchange
        if ex is None:
            up.close()
            return
        if reusable and ex.request_done:
            self.fast.give_back(up)
        else:
            up.close()
        self._finish(ex)

    def upstream_lost(self, up: _Upstream) -> None:
        ex = self.exchange
        if ex is None:
            return
        if ex.retry_head is not None and not ex.response_started:
            ex.pending.append(ex.retry_head)
            ex.retry_head = None
            ex.upstream = None
            self.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(ex.address))
            return
        if not ex.response_started:
            self._answer(
                502, b'{"error":{"code":"backend_unreachable","message":"backend closed the connection","fields":{}}}'
            )
        self._finish(ex, close=True)

    def _finish(self, ex: _Exchange, close: bool = False) -> None:
        self.exchange = None
        self.fast.activity.end(ex.backend_id)
        if close or not ex.client_keep_alive or not ex.request_done:
            self._close()
        else:
            self.resume_reading()
            self._idle_timer = asyncio.get_running_loop().call_later(KEEPALIVE_S, self._close)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _answer(self, status: int, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {400: b"Bad Request", 413: b"Payload Too Large", 502: b"Bad Gateway"}.get(status, b"Error")
        self.transport.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
            % (status, reason, len(body), body)
        )

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _hand_over(self) -> None:
        """Give the connection, and the bytes of the current request, to the aiohttp application."""
        assert self.transport is not None and self.fast.hand_over is not None
        if self.exchange is not None or self.pipelined:
            self._close()  # mid-exchange or pipelined: no clean boundary to hand over at
            return
        self.handed_over = True
        self._cancel_idle_timer()
        self.fast.clients.discard(self)
        if self.reading_paused:
            self.resume_reading()
        protocol = self.fast.hand_over()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(bytes(self.raw))
        self.raw.clear()


class _HandOver(Exception):
    pass


def _request_head(method: bytes, path: str, headers: list[tuple[str, str]], chunked: bool, length: int | None) -> bytes:
    """Serialises what the forwarding policy decided, framing added."""
    out = [b"%b %b HTTP/1.1" % (method, path.encode("utf-8", "surrogateescape"))]
    for name, value in headers:
        out.append(name.encode("utf-8", "surrogateescape") + b": " + value.encode("utf-8", "surrogateescape"))
    if chunked:
        out.append(b"Transfer-Encoding: chunked")
    elif length is not None:
        out.append(b"Content-Length: %d" % length)
    return b"\r\n".join(out) + b"\r\n\r\n"
