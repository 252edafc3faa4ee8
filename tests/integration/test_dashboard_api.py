"""What the control plane serves the dashboard: its files at /ui/ and the live fleet stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from control.embedded_db import DATABASE_NAME, EmbeddedPostgres, ensure_database
from control.routers.ui import FILES
from tests.conftest import RunningControl, start_control, stop_control
from tests.helpers import cluster, heartbeat

REGIONS = ["eu-west", "us-east", "ap-northeast"]


async def test_the_dashboard_page_is_served_with_a_strict_content_security_policy(control: RunningControl) -> None:
    async with control.client(None) as anyone:
        page = await anyone.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="/ui/app.js">' in page.text
        js = await anyone.get("/ui/app.js")
        assert js.headers["content-type"].startswith("text/javascript")
        again = await anyone.get("/ui/app.js", headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304
        redirect = await anyone.get("/ui")
        assert (redirect.status_code, redirect.headers["location"]) == (308, "/ui/")


def test_everything_the_page_loads_weighs_under_500_kb() -> None:
    assert {"index.html", "app.js", "style.css", "land.json", "projection.js"} <= FILES.keys()
    assert sum(len(body) for body, _, _ in FILES.values()) <= 500_000


async def _raw_get(url: str, path: bytes) -> bytes:
    """One request with the path exactly as given (httpx would normalise `..`)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "path",
    [
        b"/ui/../control/app.py",
        b"/ui/..%2F..%2Fpyproject.toml",
        b"/ui/%2e%2e/settings.py",
        b"/ui/projection.py",
        b"/ui/__init__.py",
        b"/ui/nope.js",
        b"/ui/static/app.js",
        b"/ui/APP.JS",
    ],
)
async def test_only_the_dashboard_files_are_served(control: RunningControl, path: bytes) -> None:
    answer = await _raw_get(control.url, path)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert status in (400, 404), answer[:200]
    assert json.loads(body)["error"]["code"] == ("not_found" if status == 404 else "bad_request")
    assert b"import" not in body and b"[tool" not in body


@pytest.fixture
async def fleet(control: RunningControl, admin: httpx.AsyncClient, edge_token: str) -> RunningControl:
    await cluster(admin, edge_token, REGIONS)
    return control


class EventReader:
    """Reads SSE frames off a streamed response, with a deadline per awaited event."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = 5.0) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            event, data = "message", []
            async for line in self._lines:
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data.append(line.split(":", 1)[1].strip())
                elif line == "" and data:
                    return event, json.loads("\n".join(data))
        raise AssertionError("stream ended")

    async def until(self, wanted: str, check: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            event, data = await self.next(max(0.01, deadline - time.monotonic()))
            if event == wanted and check(data):
                return data


@pytest.fixture
async def stream(fleet: RunningControl, admin: httpx.AsyncClient) -> AsyncIterator[EventReader]:
    token = (await admin.post("/v1/tokens", json={"name": "o", "scopes": ["observer"]})).json()["token"]
    async with fleet.client(token) as observer, observer.stream("GET", "/v1/fleet/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventReader(response)


async def test_the_fleet_stream_starts_with_regions_and_backends(stream: EventReader) -> None:
    events = dict([await stream.next(), await stream.next()])
    assert sorted(r["name"] for r in events["regions"]["regions"]) == sorted(REGIONS)
    assert events["regions"]["version"] == events["backends"]["version"] > 0
    assert events["backends"]["backends"] == []


async def test_a_new_backend_reaches_the_stream_within_two_seconds(
    stream: EventReader, admin: httpx.AsyncClient
) -> None:
    await stream.next()
    await stream.next()
    answer = (await admin.post("/v1/connect", json={"key": "doc-live", "template": "demo"})).json()
    started = time.monotonic()
    data = await stream.until("backends", lambda d: any(b["id"] == answer["backend_id"] for b in d["backends"]), 2.0)
    assert time.monotonic() - started < 2.0
    shown = next(b for b in data["backends"] if b["id"] == answer["backend_id"])
    assert shown["key"] == "doc-live" and "address" not in shown


async def test_a_burst_of_commits_costs_the_stream_one_read_per_half_second(
    stream: EventReader, admin: httpx.AsyncClient
) -> None:
    await stream.next()
    await stream.next()
    started = time.monotonic()
    ids = set()
    for i in range(20):
        r = await admin.post("/v1/connect", json={"key": f"doc-burst-{i}", "template": "demo"})
        ids.add(r.json()["backend_id"])
    spent = time.monotonic() - started
    seen = 0

    def all_there(data: dict[str, Any]) -> bool:
        nonlocal seen
        seen += 1
        return ids <= {b["id"] for b in data["backends"]}

    await stream.until("backends", all_there, 2.0)
    assert seen <= 2 + (time.monotonic() - started) / 0.5, (seen, spent)  # not one event per commit
    assert spent < 0.5 * 20  # the connects were a burst: a read per commit would have sent ~20


async def test_a_heartbeat_that_moves_no_version_still_reaches_the_stream(
    fleet: RunningControl, stream: EventReader, edge_token: str
) -> None:
    await stream.next()
    await stream.next()
    r = await heartbeat(fleet.url, edge_token, "nd-eu-west-2", "eu-west", capacity=7)
    assert r.status_code == 200
    data = await stream.until(
        "regions", lambda d: any(n["id"] == "nd-eu-west-2" for r in d["regions"] for n in r["nodes"]), 2.5
    )
    node = next(n for r in data["regions"] for n in r["nodes"] if n["id"] == "nd-eu-west-2")
    assert node["capacity"] == 7 and node["healthy"]


async def test_the_fleet_stream_is_for_admin_and_observer_only(
    fleet: RunningControl, client_token: str, edge_token: str
) -> None:
    for token, status in ((client_token, 403), (edge_token, 403), ("nope", 401), (None, 401)):
        async with fleet.client(token) as c:
            r = await c.get("/v1/fleet/events")
            assert r.status_code == status
            assert r.json()["error"]["code"] == ("forbidden" if status == 403 else "unauthorized")


async def test_the_fleet_stream_outlives_a_database_outage(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)  # a server of its own: this test stops it
    admin_url = await asyncio.to_thread(server.start)
    running = None
    try:
        running = await start_control(await ensure_database(admin_url, DATABASE_NAME))
        async with running.client() as admin, admin.stream("GET", "/v1/fleet/events") as response:
            events = EventReader(response)
            assert {(await events.next())[0], (await events.next())[0]} == {"regions", "backends"}
            await asyncio.to_thread(server.stop)
            event, data = await events.next(timeout_s=10)
            assert (event, data["message"]) == ("unavailable", "the database is unreachable; retrying")
            await asyncio.to_thread(server.start)
            await events.until("regions", lambda d: d["regions"] == [], timeout_s=30)
    finally:
        if running is not None:
            await stop_control(running)
        await asyncio.to_thread(server.stop)
