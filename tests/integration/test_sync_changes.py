"""The control plane's sync endpoints: change pages, the long-poll, 410s and compaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from control.notifier import CHANNEL, VersionNotifier
from control.services.compaction import compact
from control.settings import ControlSettings, SyncSettings
from tests.conftest import ADMIN_TOKEN, RunningControl, start_control, stop_control
from tests.helpers import add_region, cluster, heartbeat, version


async def _put_region(admin: httpx.AsyncClient, name: str, lat: float) -> None:
    r = await admin.put(f"/v1/regions/{name}", json={"lat": lat, "lon": 1.0, "edge_url": f"http://{name}.test"})
    assert r.status_code == 200, r.text


async def _changes(client: httpx.AsyncClient, since: int, wait: float = 0) -> httpx.Response:
    return await client.get("/v1/sync/changes", params={"since": since, "wait": wait})


@pytest.fixture
async def small_pages(db_url: str) -> AsyncIterator[RunningControl]:
    settings = ControlSettings(port=0, admin_token=ADMIN_TOKEN, sync=SyncSettings(changes_page_limit=3))
    running = await start_control(db_url, settings)
    try:
        yield running
    finally:
        await stop_control(running)


@pytest.fixture
async def notify_only(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningControl]:
    """A control plane whose notifier never polls after its first read: only NOTIFY can wake a waiter."""
    monkeypatch.setattr(VersionNotifier.__init__, "__defaults__", (3600.0,))
    running = await start_control(db_url)
    try:
        yield running
    finally:
        await stop_control(running)


async def test_reply_has_the_documented_shape_and_every_change(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    r = await admin.post("/v1/connect", json={"key": "doc-1", "template": "demo"})
    assert r.status_code == 200, r.text
    backend_id = r.json()["backend_id"]
    v = await version(admin)
    async with control.client(edge_token) as edge:
        r = await _changes(edge, 0)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert set(reply) == {"epoch", "from", "to", "changes", "more"}
    assert reply["from"] == 0 and reply["to"] == v and reply["more"] is False and reply["epoch"]
    assert [c["version"] for c in reply["changes"]] == sorted(c["version"] for c in reply["changes"])
    assert {c["version"] for c in reply["changes"]} == set(range(1, v + 1))
    last = reply["changes"][-2:]  # connect: the backend and its key, in one version
    assert [(c["kind"], c["id"], c["op"]) for c in last] == [
        ("backend", backend_id, "upsert"),
        ("key", "doc-1", "upsert"),
    ]
    assert last[0]["version"] == last[1]["version"] == v
    assert last[1]["body"]["backend_id"] == backend_id


async def test_pages_hold_whole_versions_only(small_pages: RunningControl, db_url: str) -> None:
    async with small_pages.client() as admin:
        edge_token = (await admin.post("/v1/tokens", json={"name": "e", "scopes": ["edge"]})).json()["token"]
        await cluster(admin, edge_token, ["eu-west"])
        ids = []
        for i in range(4):
            r = await admin.post("/v1/connect", json={"key": f"k{i}", "template": "demo"})
            ids.append(r.json()["backend_id"])
        # One heartbeat moving 4 backends: a single version of 4 rows, more than the page limit (3).
        r = await heartbeat(
            small_pages.url,
            edge_token,
            "nd-eu-west",
            "eu-west",
            backends=[{"id": b, "status": "starting"} for b in ids],
        )
        assert r.status_code == 200, r.text
        big = r.json()["version"]
        for i in range(3):
            await _put_region(admin, "eu-west", float(i))
        final = await version(admin)

        cursor, seen, pages = 0, [], []
        while True:
            reply = (await _changes(admin, cursor)).json()
            assert reply["from"] == cursor
            versions = [c["version"] for c in reply["changes"]]
            pages.append(versions)
            if versions:
                assert max(versions) == reply["to"], "`to` is the last version the page holds when cut"
            seen += reply["changes"]
            cursor = reply["to"]
            if not reply["more"]:
                break
    assert cursor == final
    assert [c["version"] for c in seen] == sorted(c["version"] for c in seen)
    assert {c["version"] for c in seen} == set(range(1, final + 1))
    assert [big] * 4 in pages, "the 4-row version came whole, alone, though larger than the limit"
    for versions in pages:
        assert len(versions) <= 3 or len(set(versions)) == 1
    # No version is split across pages.
    owners: dict[int, int] = {}
    for n, versions in enumerate(pages):
        for v in versions:
            assert owners.setdefault(v, n) == n


@pytest.mark.parametrize(
    "params",
    [{"since": -1}, {"since": "x"}, {}, {"since": 0, "wait": 61}, {"since": 0, "wait": -1}, {"since": 0, "wait": "x"}],
)
async def test_bad_parameters_are_400(control: RunningControl, edge_token: str, params: dict[str, Any]) -> None:
    async with control.client(edge_token) as edge:
        r = await edge.get("/v1/sync/changes", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"


async def test_sync_needs_the_edge_scope(control: RunningControl, client_token: str) -> None:
    async with control.client(client_token) as client:
        assert (await _changes(client, 0)).status_code == 403
        assert (await client.get("/v1/sync/snapshot")).status_code == 403
    async with control.client(None) as anonymous:
        assert (await _changes(anonymous, 0)).status_code == 401


async def test_since_ahead_of_the_current_version_needs_a_snapshot(
    control: RunningControl, admin: httpx.AsyncClient
) -> None:
    v = await version(admin)
    r = await _changes(admin, v + 5)
    assert r.status_code == 410, r.text
    assert r.json()["error"]["code"] == "snapshot_required"
    assert (await _changes(admin, v)).status_code == 200


async def test_compaction_keeps_a_row_if_either_bound_wants_it(
    control: RunningControl, admin: httpx.AsyncClient
) -> None:
    pool = control.state.pool
    for i in range(6):
        await _put_region(admin, "eu-west", float(i))
    v = await version(admin)
    # The age bound keeps everything young, whatever the count bound says.
    assert (await compact(pool, keep_versions=0, keep_s=3600)).deleted == 0
    # The count bound keeps the newest versions, whatever the age bound says.
    assert (await compact(pool, keep_versions=v, keep_s=0)).deleted == 0
    result = await compact(pool, keep_versions=2, keep_s=0)
    assert result.floor == v - 2 and result.deleted == v - 2
    remaining = await pool.fetch("SELECT DISTINCT version FROM changes ORDER BY version")
    assert [r["version"] for r in remaining] == [v - 1, v]
    assert await pool.fetchval("SELECT floor_version FROM system_version") == v - 2
    # The floor never goes down.
    assert (await compact(pool, keep_versions=100, keep_s=0)).floor == v - 2

    r = await _changes(admin, v - 3)
    assert r.status_code == 410 and r.json()["error"]["code"] == "snapshot_required"
    assert r.json()["error"]["fields"]["floor"] == v - 2
    r = await _changes(admin, v - 2)
    assert r.status_code == 200 and [c["version"] for c in r.json()["changes"]] == [v - 1, v]


async def test_compaction_age_bound_follows_the_oldest_young_row(
    control: RunningControl, admin: httpx.AsyncClient
) -> None:
    pool = control.state.pool
    for i in range(4):
        await _put_region(admin, "eu-west", float(i))
    v = await version(admin)
    # Versions v-1 and v are old; v-2 is young: nothing from v-2 on may go, though v-1 and v are old.
    await pool.execute("UPDATE changes SET created_at = now() - interval '2 hours' WHERE version <> $1", v - 2)
    result = await compact(pool, keep_versions=0, keep_s=3600)
    assert result.floor == v - 3
    rows = await pool.fetch("SELECT DISTINCT version FROM changes ORDER BY version")
    assert [r["version"] for r in rows] == [v - 2, v - 1, v]


async def test_timeout_answers_an_empty_bookmark(control: RunningControl, admin: httpx.AsyncClient) -> None:
    v = await version(admin)
    started = time.monotonic()
    r = await _changes(admin, v, wait=0.3)
    assert time.monotonic() - started >= 0.25
    assert r.status_code == 200
    reply = r.json()
    assert reply["changes"] == [] and reply["from"] == v and reply["to"] == v and reply["more"] is False


async def test_long_poll_wakes_on_commit(notify_only: RunningControl) -> None:
    feed = notify_only.app.state.sync.feed
    async with notify_only.client() as admin:
        await add_region(admin, "eu-west")
        v = await version(admin)
        poll = asyncio.create_task(_changes(admin, v, wait=30))
        await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= 1), 10)
        committed = time.monotonic()
        await _put_region(admin, "eu-west", 12.5)
        r = await asyncio.wait_for(poll, 30)
        latency = time.monotonic() - committed
    assert r.status_code == 200
    reply = r.json()
    assert reply["to"] == v + 1
    assert [(c["kind"], c["id"], c["body"]["lat"]) for c in reply["changes"]] == [("region", "eu-west", 12.5)]
    # The notifier's fallback poll is an hour here: only LISTEN/NOTIFY can have woken the request.
    assert latency < 2.0, latency


async def test_waiters_on_one_version_share_one_read(notify_only: RunningControl) -> None:
    feed = notify_only.app.state.sync.feed
    waiters = 20
    async with notify_only.client() as admin:
        await add_region(admin, "eu-west")
        v = await version(admin)
        limits = httpx.Limits(max_connections=waiters + 5)
        async with notify_only.client(limits=limits) as many:
            polls = [asyncio.create_task(_changes(many, v, wait=30)) for _ in range(waiters)]
            await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= waiters), 10)
            reads_before = feed.reads
            await _put_region(admin, "eu-west", 7.0)
            replies = await asyncio.wait_for(asyncio.gather(*polls), 30)
    assert feed.reads - reads_before == 1, "one database read served every waiter"
    bodies = {r.content for r in replies}
    assert len(bodies) == 1
    reply = replies[0].json()
    assert reply["to"] == v + 1 and reply["changes"][0]["body"]["lat"] == 7.0


async def test_a_version_without_rows_still_advances_the_bookmark(
    control: RunningControl, admin: httpx.AsyncClient, db_url: str
) -> None:
    feed = control.app.state.sync.feed
    v = await version(admin)
    poll = asyncio.create_task(_changes(admin, v, wait=30))
    await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= 1), 10)
    conn = await asyncpg.connect(db_url)
    try:  # a version that replicates nothing (e.g. a write of non-replicated data)
        async with conn.transaction():
            bumped = await conn.fetchval("UPDATE system_version SET version = version + 1 RETURNING version")
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(bumped))
    finally:
        await conn.close()
    r = await asyncio.wait_for(poll, 30)
    assert r.json()["changes"] == [] and r.json()["to"] == bumped == v + 1


async def test_a_client_that_goes_away_ends_its_long_poll(control: RunningControl, admin: httpx.AsyncClient) -> None:
    feed = control.app.state.sync.feed
    v = await version(admin)
    async with control.client() as leaving:
        poll = asyncio.create_task(_changes(leaving, v, wait=60))
        await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= 1), 10)
        poll.cancel()
    # The server notices the closed connection and stops waiting (rather than holding for 60 s).
    await asyncio.wait_for(feed.wait_for_waiting(lambda n: n == 0), 10)
