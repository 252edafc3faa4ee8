"""A control plane on its own thread and event loop, for synchronous tests (hypothesis, a
schemathesis process) that call it over loopback while the test itself blocks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from control.embedded_db import database_url
from sync.timing import HEARTBEAT_INTERVAL_S
from tests.conftest import ADMIN_TOKEN, RunningControl, create_database, drop_database, start_control, stop_control
from tests.helpers import DEMO_TEMPLATE


@contextmanager
def live_control(pg_admin_url: str) -> Iterator[RunningControl]:
    """A fresh database and a control plane serving it, with one region, one roomy edge node
    (registered by a real heartbeat) and the demo template, so connects can succeed."""
    name = asyncio.run(create_database(pg_admin_url))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="live-control", daemon=True)
    thread.start()
    running: RunningControl | None = None
    beats = None
    try:
        running = asyncio.run_coroutine_threadsafe(start_control(database_url(pg_admin_url, name)), loop).result(90)
        edge_token = _populate(running.url)
        beats = asyncio.run_coroutine_threadsafe(_heartbeats(running.url, edge_token), loop)
        yield running
    finally:
        if beats is not None:
            beats.cancel()
        if running is not None:
            asyncio.run_coroutine_threadsafe(stop_control(running), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        asyncio.run(drop_database(pg_admin_url, name))


HEARTBEAT = {"node_id": "nd-eu", "region": "eu-west", "address": "http://nd.test:1", "capacity": 1_000_000}


async def _heartbeats(url: str, edge_token: str) -> None:
    """Keep the node healthy for as long as the tests run (a real edge would)."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {edge_token}"}) as edge:
        while True:
            await edge.post("/v1/nodes/heartbeat", json={**HEARTBEAT, "applied_version": 0})
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)


def _populate(url: str) -> str:
    """Returns the edge token its node heartbeats with."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as admin:
        admin.put(
            "/v1/regions/eu-west", json={"lat": 53.35, "lon": -6.26, "edge_url": "http://eu.test"}
        ).raise_for_status()
        admin.put("/v1/templates/demo", json=DEMO_TEMPLATE).raise_for_status()
        edge = admin.post("/v1/tokens", json={"name": "edge", "scopes": ["edge"]}).json()["token"]
        r = admin.post(
            "/v1/nodes/heartbeat", json={**HEARTBEAT, "applied_version": 0}, headers={"Authorization": f"Bearer {edge}"}
        )
        r.raise_for_status()
    return str(edge)
