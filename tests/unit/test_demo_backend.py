"""The shipped `demo` backend: its routes in-process, and its signal handling as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edge.executors.readiness import probe_ready
from meridian.demo import make_app
from sync.net import free_port

REPO = str(Path(__file__).resolve().parents[2])
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    monkeypatch.setenv("MERIDIAN_BACKEND_ID", "bk-demo1")
    monkeypatch.setenv("MERIDIAN_KEY", "<doc & 42>")
    monkeypatch.setenv("MERIDIAN_REGION", "eu-west")
    monkeypatch.setenv("MERIDIAN_FENCING_TOKEN", "12")
    monkeypatch.setenv("MERIDIAN_SECRET", "the-secret")
    async with TestClient(TestServer(make_app())) as c:
        yield c


async def test_info_reports_identity_and_whether_the_request_was_proxied(client: Client) -> None:
    r = await client.get("/info", headers={"x-meridian-secret": "the-secret", "X-Meridian-Region": "eu-west"})
    body = await r.json()
    assert body == {
        "backend_id": "bk-demo1",
        "key": "<doc & 42>",
        "region": "eu-west",
        "fencing_token": 12,
        "pid": os.getpid(),
        "proxied": True,
        "headers_seen": ["x-meridian-region", "x-meridian-secret"],
        "claimed": False,
        "user": None,
    }
    assert "the-secret" not in await r.text()
    assert (await (await client.get("/info", headers={"x-meridian-secret": "nope"})).json())["proxied"] is False
    assert (await (await client.get("/info")).json())["proxied"] is False


async def test_info_without_a_key(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERIDIAN_KEY", "")
    assert (await (await client.get("/info")).json())["key"] is None


async def test_index_page_escapes_what_it_shows(client: Client) -> None:
    r = await client.get("/")
    assert r.status == 200 and r.content_type == "text/html"
    page = await r.text()
    assert "bk-demo1" in page and "eu-west" in page and ">12<" in page
    assert "&lt;doc &amp; 42&gt;" in page and "<doc" not in page


async def test_echo_streams_the_body_back_as_it_arrives(client: Client) -> None:
    first_echoed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk;"
        # The second chunk is only sent once the first came back: a buffering server would hang here.
        await asyncio.wait_for(first_echoed.wait(), 5)
        yield b"second chunk"

    async with client.post("/echo", data=body(), headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        got = await r.content.readexactly(len(b"first chunk;"))
        assert got == b"first chunk;"
        first_echoed.set()
        assert await r.read() == b"second chunk"


async def test_websocket_echoes_text_and_binary(client: Client) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("héllo")
        assert (await ws.receive(timeout=5)).data == "héllo"
        await ws.send_bytes(b"\x00\xffbin")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == b"\x00\xffbin"


async def test_sigterm_closes_websockets_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": REPO}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meridian.demo", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await probe_ready("127.0.0.1", port, "/", timeout_s=10)
        async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=5)).data == "ping"
            proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_without_port_it_says_so_and_fails() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PORT"} | {"PYTHONPATH": REPO}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meridian.demo", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 1 and b"PORT must be set" in err


@pytest.fixture
async def pool_member(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """A warm-pool member: started without an identity, with the secret its edge will claim it with."""
    for name in ("MERIDIAN_BACKEND_ID", "MERIDIAN_KEY", "MERIDIAN_FENCING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MERIDIAN_POOL_MEMBER", "wp-1")
    monkeypatch.setenv("MERIDIAN_REGION", "eu-west")
    monkeypatch.setenv("MERIDIAN_SECRET", "pool-secret")
    async with TestClient(TestServer(make_app())) as c:
        yield c


CLAIM = {"backend_id": "bk-7", "key": "doc-7", "fencing_token": 3, "user": "ann", "secret": "real-secret"}


async def test_a_pool_member_takes_the_identity_its_edge_claims_it_with(pool_member: Client) -> None:
    before = await (await pool_member.get("/info")).json()
    assert before["claimed"] is False and before["key"] is None and before["fencing_token"] is None
    r = await pool_member.post("/_meridian/claim", json=CLAIM, headers={"x-meridian-secret": "pool-secret"})
    assert r.status == 200
    info = await (await pool_member.get("/info", headers={"x-meridian-secret": "real-secret"})).json()
    assert info["claimed"] is True and info["proxied"] is True
    assert (info["backend_id"], info["key"], info["fencing_token"], info["user"]) == ("bk-7", "doc-7", 3, "ann")
    assert "real-secret" not in str(info)
    # The pool's secret no longer opens it; a second claim is refused.
    old = await pool_member.get("/info", headers={"x-meridian-secret": "pool-secret"})
    assert (await old.json())["proxied"] is False
    again = await pool_member.post("/_meridian/claim", json=CLAIM, headers={"x-meridian-secret": "real-secret"})
    assert again.status == 409


async def test_a_claim_without_the_secret_or_with_a_bad_body_is_refused(pool_member: Client) -> None:
    assert (await pool_member.post("/_meridian/claim", json=CLAIM)).status == 403
    bad = {**CLAIM, "fencing_token": "3"}
    r = await pool_member.post("/_meridian/claim", json=bad, headers={"x-meridian-secret": "pool-secret"})
    assert r.status == 400
    assert (await (await pool_member.get("/info")).json())["claimed"] is False


async def test_a_backend_started_with_its_identity_refuses_claims(client: Client) -> None:
    r = await client.post("/_meridian/claim", json=CLAIM, headers={"x-meridian-secret": "the-secret"})
    assert r.status == 409
    assert (await (await client.get("/info")).json())["key"] == "<doc & 42>"
