"""The edge and the control plane in this test's event loop, under blockbuster (as aiohttp's own
tests are): any blocking call made on the loop — sqlite, file or socket I/O, time.sleep, a
subprocess wait — fails the test. asyncio debug also reports callbacks slower than a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from blockbuster import blockbuster_ctx

from edge import keys
from edge.app import send_heartbeat, start_edge
from edge.settings import EdgeSettings
from sync.net import free_port
from sync.offline import NODE_TAG_BITS
from tests.conftest import ADMIN_TOKEN, RunningControl

SLOW_CALLBACK_S = 1.0


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "Executing" in message:
            self.seen.append(message)


@pytest.fixture
async def strict_loop() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    handler = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        with blockbuster_ctx() as bb:
            # asyncpg looks for ~/.pgpass (one stat) whenever the pool opens a connection; that is
            # the library's, bounded, and not something the edge or control plane can avoid.
            for name in ("os.stat", "os.path.exists"):
                if name in bb.functions:
                    bb.functions[name].can_block_in("asyncpg/connect_utils.py", "_read_password_file")
            yield
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
        loop.set_debug(False)
    assert handler.seen == [], "the event loop was blocked:\n" + "\n".join(handler.seen)


DEMO: dict[str, Any] = {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"]}


@contextlib.asynccontextmanager
async def running_edge(
    control: RunningControl, edge_token: str, data_dir: Path, templates: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[str]:
    """An edge in this loop, registered with the control plane and synced up to its current version
    (awaited, not polled), so the first connect at the edge succeeds."""
    async with running_edge_app(control, edge_token, data_dir, templates) as (url, _):
        yield url


@contextlib.asynccontextmanager
async def running_edge_app(
    control: RunningControl,
    edge_token: str,
    data_dir: Path,
    templates: dict[str, dict[str, Any]] | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[tuple[str, web.Application]]:
    """`running_edge`, with the edge's application for tests that look inside it."""
    async with control.client() as admin:
        for name, spec in (templates or {"demo": DEMO}).items():
            assert (await admin.put(f"/v1/templates/{name}", json=spec)).status_code == 200
    port = free_port()
    settings = EdgeSettings(
        region="eu-west",
        control_url=control.url,
        token=edge_token,
        port=port,
        data_dir=data_dir,
        edge_domain="edge.test",
        **settings_overrides,
    )
    edge = await start_edge(settings)
    try:
        await send_heartbeat(edge.app)  # registers the node (the heartbeat task may race it: harmless)
        async with control.client() as admin:
            version = (await admin.get("/healthz")).json()["version"]
        await asyncio.wait_for(edge.app[keys.SYNC_LOOP].wait_applied(version), 30)
        yield f"http://127.0.0.1:{port}", edge.app
    finally:
        await edge.stop()


@pytest.fixture
async def edge(control: RunningControl, edge_token: str, tmp_path: Path, strict_loop: None) -> AsyncIterator[str]:
    async with running_edge(control, edge_token, tmp_path / "edge") as url:
        yield url


async def _connect(edge_url: str, key: str, template: str = "demo") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{edge_url}/v1/connect", json={"key": key, "template": template}, headers=headers) as r:
            body: dict[str, Any] = await r.json()
            assert r.status == 200, body
            return body


async def test_clean_edge_shutdown_stops_its_backends_and_frees_their_keys(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with running_edge(control, edge_token, tmp_path / "edge") as url:
        body = await _connect(url, "shutdown")
        async with aiohttp.ClientSession() as s, s.get(body["url"] + "info") as r:
            pid = (await r.json())["pid"]
    async with control.client() as admin:
        got = (await admin.get(f"/v1/backends/{body['backend_id']}")).json()
    assert got["status"] == "terminated" and got["termination_reason"] == "requested"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_connect_reaches_a_control_plane_that_is_back_before_sync_has_noticed(
    control: RunningControl, edge_token: str, tmp_path: Path, strict_loop: None
) -> None:
    # Right after an outage an edge's sync may still be backing off; a connect then must not spawn a
    # second, offline backend for a key the control plane already holds somewhere else.
    async with running_edge_app(control, edge_token, tmp_path / "edge") as (url, app):
        async with control.client() as admin:
            elsewhere = await admin.post("/v1/connect", json={"key": "behind", "template": "demo"})
        assert elsewhere.status_code == 200, elsewhere.text
        sync_loop = app[keys.SYNC_LOOP]
        sync_loop.reachable = False  # what it says until its backoff runs out
        body = await _connect(url, "behind")
        assert body["placement"]["reason"] != "offline"
        assert body["backend_id"] == elsewhere.json()["backend_id"]
        fresh = await _connect(url, "behind-new")
        assert fresh["placement"]["reason"] != "offline" and fresh["fencing_token"] < 1 << NODE_TAG_BITS
        await asyncio.wait_for(sync_loop.wait_until(lambda loop: loop.reachable), 10)


async def test_connect_proxy_and_websocket_never_block_the_loop(edge: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = await _connect(edge, "loop")
    async with aiohttp.ClientSession() as s:
        async with s.get(body["url"] + "info") as r:
            assert r.status == 200 and (await r.json())["backend_id"] == body["backend_id"]
        async with s.ws_connect(body["url"].replace("http", "ws", 1) + "ws") as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=10)).data == "ping"
        for _ in range(50):
            async with s.get(body["url"] + "info") as r:
                assert r.status == 200
        async with s.post(f"{edge}/v1/connect", json={"key": "loop", "template": "demo"}, headers=headers) as r:
            again = await r.json()
        assert again["backend_id"] == body["backend_id"]


async def test_subdomain_routing_with_the_token_in_a_cookie_or_header(edge: str) -> None:
    body = await _connect(edge, "sub")
    async with aiohttp.ClientSession() as s:
        host = {"Host": f"{body['backend_id']}.edge.test"}
        async with s.get(f"{edge}/info", headers={**host, "Cookie": f"meridian_token={body['token']}"}) as r:
            assert r.status == 200 and (await r.json())["backend_id"] == body["backend_id"]
        async with s.get(f"{edge}/info", headers={**host, "Authorization": f"Bearer {body['token']}"}) as r:
            assert r.status == 200
        async with s.get(f"{edge}/info", headers=host) as r:
            assert r.status == 401
        other = {"Host": "bk-someoneelse.edge.test", "Authorization": f"Bearer {body['token']}"}
        async with s.get(f"{edge}/info", headers=other) as r:
            assert r.status == 401, "a token for one backend must not open another"


async def test_fast_path_and_full_path_share_one_keep_alive_connection(edge: str) -> None:
    body = await _connect(edge, "mixed")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        for path in ("info", "", "info"):
            async with s.get(body["url"] + path) as r:
                assert r.status == 200
        async with s.head(body["url"] + "info") as r:
            assert r.status in (200, 405)
        async with s.get(f"{edge}/healthz") as r:  # handed over to the aiohttp application
            assert r.status == 200
        async with s.get(body["url"] + "info") as r:  # served on the same connection afterwards
            assert r.status == 200 and (await r.json())["backend_id"] == body["backend_id"]
        payload = b"y" * 300_000

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 50_000):
                yield payload[i : i + 50_000]

        async with s.post(body["url"] + "echo", data=chunks()) as r:
            assert r.status == 200 and await r.read() == payload


async def test_malformed_and_oversized_heads_get_an_http_error_not_a_hang(edge: str) -> None:
    host, port = edge.removeprefix("http://").split(":")
    for raw in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /v1.x/ HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.") and int(status_line.split()[1]) in (400, 413, 431), status_line


# A backend that answers the first request of each connection (keep-alive) and silently closes a
# connection on its second: what a backend with a short keep-alive timeout does to a pooled one.
ONE_SHOT_BACKEND = """
import asyncio, os
async def handle(reader, writer):
    served = 0
    while True:
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        if served:
            writer.close()
            return
        served += 1
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: keep-alive\\r\\n\\r\\nok")
        await writer.drain()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(os.environ["PORT"]))
    await server.serve_forever()
asyncio.run(main())
"""


async def test_a_pooled_connection_the_backend_closed_is_retried_on_a_new_one(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    oneshot = {"executor": "process", "argv": [sys.executable, "-c", ONE_SHOT_BACKEND]}
    async with running_edge(control, edge_token, tmp_path / "edge", {"oneshot": oneshot}) as url:
        body = await _connect(url, "oneshot", "oneshot")
        async with aiohttp.ClientSession() as s:
            async with s.get(body["url"]) as r:  # waits (on the full path) until the backend is ready
                assert r.status == 200
        # A new client connection: the one above was handed to the full server by /v1/connect.
        async with aiohttp.ClientSession() as s:
            for i in range(4):  # from the second on, each request first meets a pooled, closed connection
                async with s.get(body["url"]) as r:
                    assert r.status == 200 and await r.read() == b"ok", i


async def test_a_warm_pool_fills_and_a_claim_never_blocks_the_loop(
    control: RunningControl, edge_token: str, tmp_path: Path, strict_loop: None
) -> None:
    pooled = {**DEMO, "warm_pool": 2, "claim_path": "/_meridian/claim"}
    async with running_edge_app(control, edge_token, tmp_path / "edge", {"pooled": pooled}) as (url, app):
        pool = app[keys.DRONE].pool
        assert pool is not None
        await asyncio.wait_for(pool.wait_until(lambda p: sum(p.available().values()) == 2), 30)
        body = await _connect(url, "pooled-loop", "pooled")
        async with aiohttp.ClientSession() as s, s.get(body["url"] + "info") as r:
            seen = await r.json()
        assert (seen["claimed"], seen["key"]) == (True, "pooled-loop")
        await asyncio.wait_for(pool.wait_until(lambda p: sum(p.available().values()) == 2), 30)
