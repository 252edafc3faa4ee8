"""`GET /v1/sync/snapshot`: format, bodies equal to the change log's, one consistent version, admission."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from control.services.snapshot import SnapshotStream
from control.settings import ControlSettings, SyncSettings
from sync.models import ChangeKind
from tests.conftest import ADMIN_TOKEN, RunningControl, start_control, stop_control
from tests.helpers import cluster, heartbeat, version

Objects = dict[tuple[str, str], dict[str, Any]]


def _parse(raw: bytes) -> tuple[dict[str, Any], Objects, dict[str, Any]]:
    lines = [orjson.loads(line) for line in raw.splitlines()]
    objects = {(o["kind"], o["id"]): o["body"] for o in lines[1:-1]}
    assert len(objects) == len(lines) - 2, "no object twice"
    return lines[0], objects, lines[-1]


async def _log_state(pool: Any, up_to: int) -> Objects:
    """The state the change log describes at `up_to`: the last body of every object."""
    state: Objects = {}
    for row in await pool.fetch(
        "SELECT kind, id, op, body FROM changes WHERE version <= $1 ORDER BY version, seq", up_to
    ):
        if row["op"] == "upsert":
            state[(row["kind"], row["id"])] = row["body"]
        else:
            state.pop((row["kind"], row["id"]), None)
    return state


async def test_snapshot_bodies_equal_what_the_change_log_carries(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    backends = []
    for key in ("a", "b", "c"):
        r = await admin.post("/v1/connect", json={"key": key, "template": "demo", "region": "eu-west"})
        backends.append(r.json()["backend_id"])
    r = await heartbeat(
        control.url,
        edge_token,
        "nd-eu-west",
        "eu-west",
        backends=[{"id": backends[0], "status": "ready", "address": "127.0.0.1:9"}],
    )
    assert r.status_code == 200
    assert (await admin.post(f"/v1/backends/{backends[1]}/revoke", json={"user": "u1"})).status_code == 200
    assert (await admin.post(f"/v1/backends/{backends[2]}/revoke", json={})).status_code == 200
    assert (await admin.post(f"/v1/backends/{backends[2]}/terminate", json={"hard": True})).status_code == 200
    assert (await admin.post("/v1/signing-keys/rotate")).status_code == 200
    r = await admin.put("/v1/templates/demo", json={"executor": "process", "argv": ["python", "-V"]})
    assert r.status_code == 200

    r = await admin.get("/v1/sync/snapshot")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    header, objects, end = _parse(r.content)
    assert header["version"] == await version(admin) and header["epoch"]
    assert set(header["kinds"]) == {kind.value for kind in ChangeKind}, "every replicated kind is in it"
    assert end == {"end": True, "count": len(objects)}
    expected = await _log_state(control.state.pool, header["version"])
    assert objects == expected
    assert {k for k, _ in objects} == set(header["kinds"]), "every kind is exercised"


async def test_old_terminations_and_their_revocations_stay_out(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    old = (await admin.post("/v1/connect", json={"key": "old", "template": "demo"})).json()["backend_id"]
    recent = (await admin.post("/v1/connect", json={"key": "recent", "template": "demo"})).json()["backend_id"]
    for backend_id in (old, recent):
        assert (await admin.post(f"/v1/backends/{backend_id}/revoke", json={})).status_code == 200
        assert (await admin.post(f"/v1/backends/{backend_id}/terminate", json={"hard": True})).status_code == 200
    await control.state.pool.execute(
        "UPDATE backends SET status_changed_at = now() - interval '61 minutes' WHERE id = $1", old
    )
    _, objects, _ = _parse((await admin.get("/v1/sync/snapshot")).content)
    assert ("backend", recent) in objects and ("backend", old) not in objects
    revoked = {body["backend_id"] for (kind, _), body in objects.items() if kind == "revocation"}
    assert revoked == {recent}
    assert ("key", "old") in objects, "keys stay: they carry the fencing-token counter"


async def test_snapshot_reads_one_version_while_writes_go_on(control: RunningControl, admin: httpx.AsyncClient) -> None:
    pool = control.state.pool
    for i in range(30):
        r = await admin.put(f"/v1/regions/r{i:02d}", json={"lat": 0.0, "lon": 0.0, "edge_url": "http://r.test"})
        assert r.status_code == 200
    stream = SnapshotStream(pool, page_size=4)
    await stream.open()
    try:
        chunks = stream.lines()
        received = [await anext(chunks), await anext(chunks)]  # header and the first page
        for i in range(30):  # commit writes between pages, to the table being read and to later ones
            r = await admin.put(f"/v1/regions/r{i:02d}", json={"lat": 1.0, "lon": 0.0, "edge_url": "http://r.test"})
            assert r.status_code == 200
            r = await admin.put(f"/v1/templates/t{i}", json={"executor": "process", "argv": ["x", str(i)]})
            assert r.status_code == 200
        received += [chunk async for chunk in chunks]
    finally:
        await stream.close()
    header, objects, _ = _parse(b"".join(received))
    assert header["version"] < await version(admin)
    assert objects == await _log_state(pool, header["version"])
    assert {body["lat"] for (kind, _), body in objects.items() if kind == "region"} == {0.0}
    assert not [oid for kind, oid in objects if kind == "template_name"], "no template existed at its version"


@pytest.fixture
async def one_snapshot_at_a_time(db_url: str) -> AsyncIterator[RunningControl]:
    settings = ControlSettings(
        port=0, admin_token=ADMIN_TOKEN, sync=SyncSettings(max_concurrent_snapshots=1, snapshot_page_size=500)
    )
    running = await start_control(db_url, settings)
    try:
        yield running
    finally:
        await stop_control(running)


async def test_snapshots_beyond_the_limit_get_429_with_retry_after(one_snapshot_at_a_time: RunningControl) -> None:
    control = one_snapshot_at_a_time
    admission = control.app.state.sync.snapshots
    async with control.client() as admin:
        edge_token = (await admin.post("/v1/tokens", json={"name": "e", "scopes": ["edge"]})).json()["token"]
        await cluster(admin, edge_token, ["eu-west"])
        # ~18 MB of (draining) backends, far more than socket buffers hold: the first stream
        # stays open until its reader reads on.
        await control.state.pool.execute(
            """
            INSERT INTO backends (id, key, template_name, template_id, region, node_id, status, fencing_token, secret)
            SELECT 'bk-' || i, NULL, 'demo', (SELECT id FROM templates LIMIT 1), 'eu-west', 'nd-eu-west',
                   'draining', 1, repeat('s', 800)
            FROM generate_series(1, 20000) AS i
            """
        )
    headers = {"Authorization": f"Bearer {edge_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        first = await session.get(f"{control.url}/v1/sync/snapshot")
        assert first.status == 200
        await first.content.readline()  # the header: the stream is running
        assert admission.active == 1
        async with session.get(f"{control.url}/v1/sync/snapshot") as refused:
            assert refused.status == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert (await refused.json())["error"]["code"] == "too_many_requests"
        first.close()  # the reader goes away mid-stream: its slot must come back
        await asyncio.wait_for(admission.idle.wait(), 10)
        async with session.get(f"{control.url}/v1/sync/snapshot") as again:
            assert again.status == 200
            lines = (await again.read()).splitlines()
        assert orjson.loads(lines[-1])["end"] is True
    await asyncio.wait_for(admission.idle.wait(), 10)
    assert admission.active == 0
