"""What is open when its connection token is revoked, or its backend ends, is closed: WebSockets
with a readable close frame (4001 `revoked`), streaming responses cut — on the fast path and on
connections the aiohttp application owns, locally and through a forwarded hop. Real sockets:
the WebSocket handshake and its close frame are read byte for byte."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edge.app import EdgeServer
from sync.close_codes import CLOSE_BACKEND_GONE, CLOSE_GOING_AWAY, CLOSE_REVOKED, REASON_REVOKED
from sync.timing import TOKEN_REVOCATION_PROPAGATION_S
from tests.conftest import RunningControl
from tests.integration.edge_support import ECHO, RawConnection, connect, running_edges, wait_ready

LONG = {**ECHO, "idle_timeout_s": 60}


@pytest.fixture
async def edges(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[list[EdgeServer]]:
    async with running_edges(control, edge_token, tmp_path, ["eu-west", "us-east"], {"echo": LONG}) as started:
        yield started


class RawWebSocket:
    """A client WebSocket on a raw connection: frames written and read by hand."""

    def __init__(self, conn: RawConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, edge: EdgeServer, path: str, *, after_api_request: bool = False) -> RawWebSocket:
        """`after_api_request`: the connection first serves the edge's own API, so the aiohttp
        application owns it when the upgrade comes."""
        conn = await _connection(edge, after_api_request)
        key = base64.b64encode(os.urandom(16)).decode()
        await conn.send(
            f"GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(30):
            head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(conn)

    async def send_text(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.conn.send(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def frame(self, within_s: float = 30) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the edge (unmasked, as a server sends)."""
        async with asyncio.timeout(within_s):
            first, second = await self.conn.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.conn.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.conn.reader.readexactly(8))
            return first & 0x0F, await self.conn.reader.readexactly(length)

    async def close_frame(self, within_s: float) -> tuple[int, str]:
        """The close frame's (code, reason), skipping data frames before it."""
        while True:
            opcode, payload = await self.frame(within_s)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    async def close(self) -> None:
        await self.conn.close()


async def _connection(edge: EdgeServer, after_api_request: bool) -> RawConnection:
    conn = await RawConnection.open(edge.port)
    if after_api_request:
        await conn.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await conn.response()).status == 200
    return conn


async def _ready_backend(arrival: EdgeServer, key: str, route: str, **body: str) -> dict[str, str]:
    """A ready backend on the arrival edge's node (`local`) or on the other region's (`forwarded`)."""
    answer = await connect(arrival, key, region="eu-west" if route == "local" else "us-east", **body)
    await wait_ready(answer)
    return answer


async def _revoke(control: RunningControl, backend_id: str, **body: str) -> float:
    """Revoke through the control plane; the time it answered."""
    async with control.client() as admin:
        r = await admin.post(f"/v1/backends/{backend_id}/revoke", json=body)
    assert r.status_code == 200, r.text
    return time.monotonic()


@pytest.mark.parametrize("route", ["local", "forwarded"])
@pytest.mark.parametrize("path", ["fast", "aiohttp"])
async def test_a_revoked_token_closes_its_open_websocket_with_4001_revoked(
    control: RunningControl, edges: list[EdgeServer], route: str, path: str
) -> None:
    arrival = edges[0]
    answer = await _ready_backend(arrival, f"revoke-ws-{route}-{path}", route, user="alice")
    ws = await RawWebSocket.open(arrival, f"/{answer['token']}/ws", after_api_request=path == "aiohttp")
    try:
        assert (await ws.frame())[0] == 0x1  # what the backend saw: the socket is through
        revoked_at = await _revoke(control, answer["backend_id"])
        code, reason = await ws.close_frame(within_s=TOKEN_REVOCATION_PROPAGATION_S + 10)
        elapsed = time.monotonic() - revoked_at
    finally:
        await ws.close()
    assert (code, reason) == (CLOSE_REVOKED, REASON_REVOKED)
    assert elapsed <= TOKEN_REVOCATION_PROPAGATION_S, f"closed {elapsed:.2f} s after the revocation"


async def test_revoking_another_users_tokens_leaves_the_websocket_open(
    control: RunningControl, edges: list[EdgeServer]
) -> None:
    edge = edges[0]
    answer = await connect(edge, "revoke-other-user", user="alice")
    await wait_ready(answer)
    ws = await RawWebSocket.open(edge, f"/{answer['token']}/ws")
    try:
        await ws.frame()
        mallory = await connect(edge, "revoke-other-user", user="mallory")
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("GET", f"http://127.0.0.1:{edge.port}/v1/status/{mallory['token']}") as events:
                await _revoke(control, answer["backend_id"], user="mallory")
                # an event, not a sleep: the edge has applied the revocation once mallory's stream says so
                async for line in events.aiter_lines():
                    if line == "event: revoked":
                        break
        await ws.send_text("still here")
        assert await ws.frame() == (0x1, b"still here")
    finally:
        await ws.close()


@pytest.mark.parametrize("route", ["local", "forwarded"])
@pytest.mark.parametrize("path", ["fast", "aiohttp"])
async def test_a_revoked_token_cuts_its_event_stream(
    control: RunningControl, edges: list[EdgeServer], route: str, path: str
) -> None:
    arrival = edges[0]
    answer = await _ready_backend(arrival, f"revoke-sse-{route}-{path}", route)
    conn = await _connection(arrival, after_api_request=path == "aiohttp")
    try:
        await conn.send(f"GET /{answer['token']}/sse?every=0.2&for=120 HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        async with asyncio.timeout(30):
            await conn.reader.readuntil(b"data: tick")
        revoked_at = await _revoke(control, answer["backend_id"])
        assert await conn.closed_within(TOKEN_REVOCATION_PROPAGATION_S + 10), "the stream went on"
        elapsed = time.monotonic() - revoked_at
    finally:
        await conn.close()
    assert elapsed <= TOKEN_REVOCATION_PROPAGATION_S, f"cut {elapsed:.2f} s after the revocation"


@pytest.mark.parametrize("route", ["local", "forwarded"])
@pytest.mark.parametrize("path", ["fast", "aiohttp"])
async def test_a_terminated_backend_closes_its_websocket_with_a_valid_code(
    control: RunningControl, edges: list[EdgeServer], route: str, path: str
) -> None:
    arrival = edges[0]
    answer = await _ready_backend(arrival, f"terminate-ws-{route}-{path}", route)
    ws = await RawWebSocket.open(arrival, f"/{answer['token']}/ws", after_api_request=path == "aiohttp")
    try:
        hello = json.loads((await ws.frame())[1])
        assert hello["path"] == "/ws"
        async with control.client() as admin:
            r = await admin.post(f"/v1/backends/{answer['backend_id']}/terminate", json={})
        assert r.status_code == 200, r.text
        code, reason = await ws.close_frame(within_s=30)
    finally:
        await ws.close()
    assert code in (CLOSE_GOING_AWAY, CLOSE_BACKEND_GONE) and reason, (code, reason)


@pytest.mark.parametrize("path", ["fast", "aiohttp"])
async def test_a_stream_cut_by_its_backend_is_cut_for_the_client_not_ended_cleanly(
    edges: list[EdgeServer], path: str
) -> None:
    """A backend dying mid-stream (or an owning edge cutting a revoked stream) must not reach the
    client as a complete answer: no terminating chunk, the connection closed."""
    arrival = edges[0]
    answer = await _ready_backend(arrival, f"cut-sse-{path}", "local")
    async with httpx.AsyncClient() as http:
        pid = (await http.get(answer["url"] + "info")).json()["pid"]
    conn = await _connection(arrival, after_api_request=path == "aiohttp")
    try:
        await conn.send(f"GET /{answer['token']}/sse?every=0.2&for=120 HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        async with asyncio.timeout(30):
            await conn.reader.readuntil(b"data: tick")
        os.kill(pid, signal.SIGKILL)
        rest = bytearray()
        async with asyncio.timeout(30):
            while chunk := await conn.reader.read(65536):
                rest += chunk
    finally:
        await conn.close()
    assert not rest.endswith(b"0\r\n\r\n"), "the cut stream was ended as if complete"
