"""Shared fixtures: a real PostgreSQL (embedded, or MERIDIAN_TEST_DATABASE_URL), a fresh database per
test, and the control plane served by uvicorn on a loopback port. Also the skip policy: under
`CI=true` a skip that is not on `ALLOWED_SKIPS` fails the run."""

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
from fastapi import FastAPI

from control.app import create_app
from control.embedded_db import EmbeddedPostgres, database_url
from control.settings import ControlSettings
from control.state import ControlState

ADMIN_TOKEN = "test-admin-token-0123456789"
EDGE_TOKEN = "test-edge-token-0123456789ab"

# The only skips CI accepts (test id without parameters → why skipping it is legitimate). Anything
# else that skips under CI=true — missing data, a missing tool — fails the run.
ALLOWED_SKIPS: dict[str, str] = {
    "tests/unit/test_placement.py::test_unreadable_database_names_the_file": (
        "root reads files whatever their mode, so an unreadable file cannot be made when running as root"
    ),
    # Their cgroup variants need cgroup v2 mounted writable (not every container has it); the
    # /proc-walk variants of the first two run everywhere.
    **dict.fromkeys(
        (
            "tests/integration/test_process_hygiene.py::test_stop_ends_children_that_called_setsid",
            "tests/integration/test_process_hygiene.py::test_a_leader_that_dies_takes_its_setsid_children_with_it",
            "tests/integration/test_process_hygiene.py::test_cgroup_catches_an_orphan_with_an_empty_environment",
        ),
        "cgroup v2 is not mounted writable on this machine",
    ),
}
# MaxMind's MIT-licensed GeoIP2/GeoLite2 City test databases (tests/data/geoip/README.md).
GEOIP_DIR = Path(__file__).resolve().parent / "data" / "geoip"
CITY_TEST_DB = GEOIP_DIR / "GeoIP2-City-Test.mmdb"


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


async def create_database(admin_url: str) -> str:
    """A new, empty database on the test server; its name."""
    name = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db_url(pg_admin_url: str) -> AsyncIterator[str]:
    name = await create_database(pg_admin_url)
    yield database_url(pg_admin_url, name)
    await drop_database(pg_admin_url, name)


@dataclass
class RunningControl:
    url: str
    app: FastAPI
    server: uvicorn.Server
    db_url: str

    def client(self, token: str | None = ADMIN_TOKEN, **kw: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    @property
    def state(self) -> ControlState:
        state: ControlState = self.app.state.control
        return state


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


async def mint_token(admin: httpx.AsyncClient, *scopes: str) -> str:
    """A new API token with these scopes (named after them), minted by `admin`."""
    r = await admin.post("/v1/tokens", json={"name": "-".join(scopes), "scopes": list(scopes)})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture
async def edge_token(admin: httpx.AsyncClient) -> str:
    return await mint_token(admin, "edge")


@pytest.fixture
async def client_token(admin: httpx.AsyncClient) -> str:
    return await mint_token(admin, "client")


@pytest.fixture
async def observer_token(admin: httpx.AsyncClient) -> str:
    return await mint_token(admin, "observer")


# ---- skip policy -------------------------------------------------------------------------------


def _skips_refused() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and _skips_refused()) or hasattr(report, "wasxfail"):
        return
    if item.nodeid.split("[", 1)[0] in ALLOWED_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true but not on ALLOWED_SKIPS (tests/conftest.py): {_skip_reason(report)}"


_refused_module_skips: list[str] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped and _skips_refused():
        _refused_module_skips.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _refused_module_skips:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nmodules skipped under CI=true (not allowed):\n  " + "\n  ".join(_refused_module_skips))
