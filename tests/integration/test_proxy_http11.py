"""HTTP/1.1 as a proxy owes it to its clients, checked with exact bytes on raw sockets:
pipelining, `Expect: 100-continue`, slow and idle connections, the connection cap, bodiless
responses, long streams — and WebSockets spliced byte for byte."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import EdgeServer
from sync.models import Change, ChangeKind, ChangeOp
from tests.conftest import RunningControl
from tests.integration.edge_support import ECHO, RawConnection, connect, edge_url, running_edges, wait_ready

HEAD_TIMEOUT_S = 1.0
KEEPALIVE_S = 1.5
MAX_CONNECTIONS = 40
LONG_TEMPLATE = {**ECHO, "idle_timeout_s": 30}


@pytest.fixture
async def edges(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[list[EdgeServer]]:
    async with running_edges(
        control,
        edge_token,
        tmp_path,
        ["eu-west", "us-east"],
        {"echo": ECHO, "long": LONG_TEMPLATE},
        head_timeout_s=HEAD_TIMEOUT_S,
        keepalive_timeout_s=KEEPALIVE_S,
        max_client_connections=MAX_CONNECTIONS,
    ) as started:
        yield started


@pytest.fixture
async def edge(edges: list[EdgeServer]) -> EdgeServer:
    return edges[0]


async def _ready_token(edge: EdgeServer, key: str, **body: Any) -> str:
    answer = await connect(edge, key, **body)
    await wait_ready(answer)
    return str(answer["token"])


async def test_two_pipelined_gets_in_one_write_are_answered_in_order(edge: EdgeServer) -> None:
    token = await _ready_token(edge, "pipe-get")
    conn = await RawConnection.open(edge.port)
    try:
        await conn.send(
            f"GET /{token}/first HTTP/1.1\r\nHost: a\r\n\r\nGET /{token}/second HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        first, second = await conn.response(), await conn.response()
    finally:
        await conn.close()
    assert (first.status, second.status) == (200, 200)
    assert json.loads(first.body)["path"] == "/first" and json.loads(second.body)["path"] == "/second"


async def test_pipelined_post_then_get_in_one_write_are_answered_in_order(edge: EdgeServer) -> None:
    token = await _ready_token(edge, "pipe-post")
    conn = await RawConnection.open(edge.port)
    try:
        await conn.send(
            f"POST /{token}/post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            f"GET /{token}/after HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        first, second = await conn.response(), await conn.response()
        # and the connection goes on serving
        await conn.send(f"GET /{token}/third HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        third = await conn.response()
    finally:
        await conn.close()
    assert json.loads(first.body)["method"] == "POST" and json.loads(first.body)["body_bytes"] == 5
    assert json.loads(second.body)["path"] == "/after"
    assert json.loads(third.body)["path"] == "/third"


async def test_pipelined_requests_across_backend_and_api_keep_their_order(edge: EdgeServer) -> None:
    token = await _ready_token(edge, "pipe-mixed")
    conn = await RawConnection.open(edge.port)
    try:
        await conn.send(
            f"GET /{token}/one HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
            f"GET /{token}/three HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        answers = [await conn.response() for _ in range(3)]
    finally:
        await conn.close()
    assert json.loads(answers[0].body)["path"] == "/one"
    assert json.loads(answers[1].body)["status"] == "ok"
    assert json.loads(answers[2].body)["path"] == "/three"


async def test_expect_100_continue_is_answered_by_the_edge_when_the_backend_never_sends_100(
    edge: EdgeServer,
) -> None:
    token = await _ready_token(edge, "expect")
    conn = await RawConnection.open(edge.port)
    try:
        await conn.send(
            f"POST /{token}/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            interim = await conn.reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        await conn.send(b"hello world")
        final = await conn.response()
    finally:
        await conn.close()
    seen = json.loads(final.body)
    assert final.status == 200 and seen["body_bytes"] == 11
    assert not any(n.lower() == "expect" for n, _ in seen["headers"])


async def test_half_a_head_and_then_nothing_is_closed_within_the_head_timeout(edge: EdgeServer) -> None:
    token = await _ready_token(edge, "slowloris")
    for opening in (b"", f"GET /{token}/x HTTP/1.1\r\nHost: a\r\nX-Slow:".encode()):
        conn = await RawConnection.open(edge.port)
        try:
            if opening:
                await conn.send(opening)
            started = time.monotonic()
            assert await conn.closed_within(HEAD_TIMEOUT_S + 5), "the edge kept a half-sent head open"
            assert time.monotonic() - started >= HEAD_TIMEOUT_S * 0.8
        finally:
            await conn.close()


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(edge: EdgeServer) -> None:
    token = await _ready_token(edge, "keepalive")
    conn = await RawConnection.open(edge.port)
    try:
        await conn.send(f"GET /{token}/x HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert (await conn.response()).status == 200
        started = time.monotonic()
        assert await conn.closed_within(KEEPALIVE_S + 5)
        assert time.monotonic() - started >= KEEPALIVE_S * 0.8
    finally:
        await conn.close()


async def _one_more_is_refused_until_they_close(edge: EdgeServer, held: list[RawConnection]) -> None:
    """With `held` open (the cap's worth), one more connection gets 503; once they close, 200."""
    try:
        extra = await RawConnection.open(edge.port)
        try:
            await extra.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await extra.response()).status == 503
        finally:
            await extra.close()
    finally:
        for conn in held:
            await conn.close()
    async with aiohttp.ClientSession() as s:
        for _ in range(50):  # the edge notices the closes as they arrive
            async with s.get(f"{edge_url(edge)}/healthz") as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.05)
    pytest.fail("the edge still refuses connections after the held ones closed")


async def test_connections_over_the_cap_get_503_and_the_edge_recovers(edge: EdgeServer) -> None:
    held = [await RawConnection.open(edge.port) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0)  # let the edge accept them
    await _one_more_is_refused_until_they_close(edge, held)


async def test_connections_handed_to_the_edge_api_count_toward_the_cap(edge: EdgeServer) -> None:
    """An attacker holding connections on the edge's own API (here: status streams, which the
    aiohttp application serves) cannot open more than the cap either."""
    token = await _ready_token(edge, "cap-api")
    held = [await RawConnection.open(edge.port) for _ in range(MAX_CONNECTIONS)]
    for conn in held:
        await conn.send(f"GET /v1/status/{token} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    for conn in held:  # each is streaming from the aiohttp application now
        async with asyncio.timeout(10):
            await conn.reader.readuntil(b"event: status")
    assert edge.fast.clients == set()
    await _one_more_is_refused_until_they_close(edge, held)


async def test_head_204_and_304_are_framed_without_a_body_and_the_connection_goes_on(edge: EdgeServer) -> None:
    token = await _ready_token(edge, "bodiless")
    conn = await RawConnection.open(edge.port)
    try:
        await conn.send(f"HEAD /{token}/x HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        head = await conn.response(head_request=True)
        assert head.status == 200 and head.body == b"" and head.header("content-length") is not None
        for code in (204, 304):
            await conn.send(f"GET /{token}/status?code={code} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            answer = await conn.response()
            assert answer.status == code and answer.body == b""
        await conn.send(f"GET /{token}/after HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert json.loads((await conn.response()).body)["path"] == "/after"
    finally:
        await conn.close()


@pytest.mark.parametrize("size_mib", [8, 32])
@pytest.mark.parametrize("route", ["local", "forwarded"])
async def test_big_websocket_messages_are_echoed_through_the_edge(
    edges: list[EdgeServer], size_mib: int, route: str
) -> None:
    local, other = edges
    token = await _ready_token(local, f"ws-{size_mib}-{route}", region="eu-west" if route == "local" else "us-east")
    message = os.urandom(size_mib << 20)
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{edge_url(local)}/{token}/ws", max_msg_size=0) as ws:
            await ws.receive(timeout=10)  # what the backend saw
            await ws.send_bytes(message)
            echoed = await ws.receive(timeout=60)
            assert echoed.type is aiohttp.WSMsgType.BINARY and echoed.data == message
            await ws.send_str("still open")
            assert (await ws.receive(timeout=10)).data == "still open"
    assert other is not None


@pytest.mark.parametrize("route", ["local", "forwarded"])
async def test_a_backend_killed_under_an_open_websocket_gives_a_valid_close_code(
    edges: list[EdgeServer], route: str
) -> None:
    local, _ = edges
    token = await _ready_token(local, f"ws-kill-{route}", region="eu-west" if route == "local" else "us-east")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{edge_url(local)}/{token}/ws") as ws:
            pid = json.loads((await ws.receive(timeout=10)).data)["pid"]
            os.kill(pid, signal.SIGKILL)
            closing = await ws.receive(timeout=30)
            assert closing.type is aiohttp.WSMsgType.CLOSE, closing
            assert ws.close_code == 1011, ws.close_code
            assert closing.extra  # a reason is given


@pytest.mark.slow
@pytest.mark.timeout(480)
async def test_a_six_minute_event_stream_through_a_forwarded_path_is_never_cut(edges: list[EdgeServer]) -> None:
    """The only long test: no total timeout anywhere on a response that is still streaming."""
    local, _ = edges
    token = await _ready_token(local, "sse-long", template="long", region="us-east")
    events = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as s:
        async with s.get(f"{edge_url(local)}/{token}/sse?every=10&for=360") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            async for line in r.content:
                if line.startswith(b"data: tick"):
                    events += 1
                if line.startswith(b"data: done"):
                    break
            else:
                pytest.fail("the stream ended before its last event")
    assert events >= 36


@pytest.mark.parametrize(("reason", "code"), [("superseded", 4000), ("requested", 1001)])
async def test_a_websocket_whose_backend_ended_is_closed_with_a_code_that_says_why(
    edges: list[EdgeServer], reason: str, code: int
) -> None:
    """The replica delivering the backend's termination (as after a partition's reconciliation)
    closes its open WebSockets with a readable close frame."""
    local, _ = edges
    answer = await connect(local, f"ws-ended-{reason}")
    await wait_ready(answer)
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{answer['url']}ws") as ws:
            await ws.receive(timeout=10)
            ended = {"id": answer["backend_id"], "status": "terminated", "termination_reason": reason}
            local.fast.on_changes(
                [Change(version=1, kind=ChangeKind.BACKEND, id=answer["backend_id"], op=ChangeOp.UPSERT, body=ended)]
            )
            closing = await ws.receive(timeout=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE and ws.close_code == code
    assert closing.extra == ("superseded" if code == 4000 else "backend stopped")
