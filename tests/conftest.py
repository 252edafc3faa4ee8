"""Shared fixtures: a real PostgreSQL (embedded, or MERIDIAN_TEST_DATABASE_URL), a fresh database per
test, and the control plane served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn

from control.app import create_app
from control.embedded_db import EmbeddedPostgres, database_url
from control.settings import ControlSettings

ADMIN_TOKEN = "test-admin-token-0123456789"
EDGE_TOKEN = "test-edge-token-0123456789ab"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("MERIDIAN_TEST_DATABASE_URL") or os.environ.get("MERIDIAN_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def db_url(pg_admin_url: str) -> AsyncIterator[str]:
    name = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield database_url(pg_admin_url, name)
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class RunningControl:
    url: str
    app: object
    server: uvicorn.Server
    db_url: str

    def client(self, token: str | None = ADMIN_TOKEN, **kw: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    @property
    def state(self):
        return self.app.state.control  # type: ignore[attr-defined]


async def start_control(db_url: str, settings: ControlSettings | None = None) -> RunningControl:
    settings = settings or ControlSettings(port=0, admin_token=ADMIN_TOKEN)
    app = create_app(settings, db_url)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=30,
            proxy_headers=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("control plane did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    running = RunningControl(url=f"http://127.0.0.1:{port}", app=app, server=server, db_url=db_url)
    running._task = task  # type: ignore[attr-defined]
    return running


async def stop_control(running: RunningControl) -> None:
    running.server.should_exit = True
    await running._task  # type: ignore[attr-defined]


@pytest.fixture
async def control(db_url: str) -> AsyncIterator[RunningControl]:
    running = await start_control(db_url)
    try:
        yield running
    finally:
        await stop_control(running)


@pytest.fixture
async def admin(control: RunningControl) -> AsyncIterator[httpx.AsyncClient]:
    async with control.client() as client:
        yield client


@pytest.fixture
async def edge_token(admin: httpx.AsyncClient) -> str:
    r = await admin.post("/v1/tokens", json={"name": "edge", "scopes": ["edge"]})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture
async def client_token(admin: httpx.AsyncClient) -> str:
    r = await admin.post("/v1/tokens", json={"name": "client", "scopes": ["client"]})
    assert r.status_code == 201, r.text
    return r.json()["token"]
