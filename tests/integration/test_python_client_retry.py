"""The Python client's retries against a real control plane: 503 no_capacity retried until a node
can take the backend, and given up after the last attempt; Retry-After honoured while PostgreSQL
is down (503 database_unavailable), until it is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from control.embedded_db import DATABASE_NAME, EmbeddedPostgres, ensure_database
from meridian.client import AsyncMeridian, Meridian, RetryPolicy
from sync.errors import NoCapacity
from tests.conftest import ADMIN_TOKEN, RunningControl, start_control, stop_control
from tests.helpers import DEMO_TEMPLATE, add_region, heartbeat

FAST_RETRY = RetryPolicy(attempts=12, initial_s=0.05, max_s=0.5)


class TimedTransport(httpx.AsyncHTTPTransport):
    """A real transport noting when each request leaves and what each answer says."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []
        self.answered_at: list[float] = []
        self.answers: list[tuple[int, str | None]] = []
        self.first_503 = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        response = await super().handle_async_request(request)
        self.answered_at.append(time.monotonic())
        self.answers.append((response.status_code, response.headers.get("retry-after")))
        if response.status_code == 503:
            self.first_503.set()
        return response


class RecordingSyncTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


async def test_no_capacity_is_retried_until_a_node_can_take_the_backend(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    assert (await admin.put("/v1/templates/demo", json=DEMO_TEMPLATE)).status_code == 200
    transport = TimedTransport()
    async with AsyncMeridian(control.url, ADMIN_TOKEN, retry=FAST_RETRY, transport=transport) as api:
        connecting = asyncio.create_task(api.connect("retried", "demo"))
        await asyncio.wait_for(transport.first_503.wait(), 10)  # no region, no node: no_capacity
        await add_region(admin, "eu-west")
        assert (await heartbeat(control.url, edge_token, "nd-eu", "eu-west", capacity=5)).status_code == 200
        conn = await connecting
    assert conn.region == "eu-west" and conn.spawned and conn.key == "retried"
    statuses = [status for status, _ in transport.answers]
    assert statuses[0] == 503 and statuses[-1] == 200 and set(statuses[:-1]) == {503}


async def test_no_capacity_surfaces_after_the_last_attempt(control: RunningControl, admin: httpx.AsyncClient) -> None:
    assert (await admin.put("/v1/templates/demo", json=DEMO_TEMPLATE)).status_code == 200
    transport = RecordingSyncTransport()
    policy = RetryPolicy(attempts=3, initial_s=0.05, max_s=0.1)

    def connect() -> None:  # the sync client, in a thread: the control plane runs on this loop
        with Meridian(control.url, ADMIN_TOKEN, retry=policy, transport=transport) as api:
            api.connect(None, "demo")

    with pytest.raises(NoCapacity) as refused:
        await asyncio.to_thread(connect)
    assert refused.value.status == 503 and "no region" in refused.value.message
    assert transport.statuses == [503, 503, 503]


async def test_retry_after_is_honoured_until_the_database_is_back(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)  # its own server: this test stops it
    admin_url = await asyncio.to_thread(server.start)
    running = None
    try:
        running = await start_control(await ensure_database(admin_url, DATABASE_NAME))
        transport = TimedTransport()
        policy = RetryPolicy(attempts=8, initial_s=0.05, max_s=0.2)
        async with AsyncMeridian(running.url, ADMIN_TOKEN, retry=policy, transport=transport) as api:
            assert (await api.health())["status"] == "ok"
            await asyncio.to_thread(server.stop)
            health = asyncio.create_task(api.health())
            await asyncio.wait_for(transport.first_503.wait(), 30)
            await asyncio.to_thread(server.start)
            assert (await health)["status"] == "ok"
        refused = [i for i, (status, _) in enumerate(transport.answers) if status == 503]
        assert refused, transport.answers
        for i in refused:
            retry_after = float(transport.answers[i][1] or 0)
            assert retry_after >= 1
            assert transport.sent[i + 1] - transport.answered_at[i] >= retry_after, "retried before Retry-After"
        assert transport.answers[-1][0] == 200
    finally:
        if running is not None:
            await stop_control(running)
        await asyncio.to_thread(server.stop)
