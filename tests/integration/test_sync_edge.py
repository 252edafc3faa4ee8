"""Edges syncing from a real control plane: convergence, restarts, 410, epoch, gaps, corruption, outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn

from control.app import create_app
from control.notifier import CHANNEL
from control.services.compaction import compact
from control.settings import ControlSettings
from sync.models import Change, ChangeKind, ChangeOp
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.helpers import cluster, heartbeat, version
from tests.integration.sync_support import Edge, diff_states, snapshot_state


@pytest.fixture
async def edge(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[Edge]:
    e = Edge(tmp_path / "edge", control.url, edge_token)
    try:
        yield await e.start()
    finally:
        await e.stop()


async def _assert_converged(e: Edge, control: RunningControl, token: str) -> int:
    v, epoch, expected = await snapshot_state(control.url, token)
    await e.caught_up(v)
    assert e.replica is not None
    assert e.replica.applied_version == v and e.replica.epoch == epoch
    assert diff_states(e.state(), expected) == []
    return v


async def _put_region(admin: httpx.AsyncClient, name: str, lat: float) -> None:
    r = await admin.put(f"/v1/regions/{name}", json={"lat": lat, "lon": 2.0, "edge_url": f"http://{name}.test"})
    assert r.status_code == 200, r.text


async def test_edge_follows_writes_and_serves_lookups(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    r = await admin.post("/v1/connect", json={"key": "doc-1", "template": "demo", "region": "eu-west"})
    backend_id = r.json()["backend_id"]
    await _assert_converged(edge, control, edge_token)
    replica = edge.replica
    assert replica is not None and edge.loop is not None
    assert edge.loop.snapshots == 1 and edge.loop.reachable and edge.loop.last_sync_at is not None
    assert replica.live_backend_for_key("doc-1").id == backend_id  # type: ignore[union-attr]
    assert [b.id for b in replica.backends_on_node("nd-eu-west")] == [backend_id]
    assert replica.template_by_name("demo").spec.executor == "process"  # type: ignore[union-attr]
    assert replica.region("us-east").lat == 38.9  # type: ignore[union-attr]
    assert {n.id for n in replica.nodes()} == {"nd-eu-west", "nd-us-east"}
    assert (await admin.post(f"/v1/backends/{backend_id}/revoke", json={"user": "u"})).status_code == 200
    assert (await admin.post(f"/v1/backends/{backend_id}/terminate", json={"hard": True})).status_code == 200
    await _assert_converged(edge, control, edge_token)
    assert replica.live_backend_for_key("doc-1") is None
    assert replica.backend(backend_id).status == "terminated"  # type: ignore[union-attr]
    assert [r.user_id for r in replica.revocations(backend_id)] == ["u"]
    assert edge.loop.snapshots == 1, "everything after the first snapshot came as diffs"


async def test_restarted_edge_resumes_from_its_cursor_without_a_snapshot(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await _assert_converged(edge, control, edge_token)
    await edge.stop()
    for i in range(5):
        await _put_region(admin, "eu-west", float(i))
    await edge.start()
    await _assert_converged(edge, control, edge_token)
    assert edge.loop is not None and edge.loop.snapshots == 0 and edge.loop.replies >= 1
    assert edge.snapshots == 1


async def test_compacted_cursor_410_then_snapshot_then_diffs_again(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await _assert_converged(edge, control, edge_token)
    await edge.stop()
    for i in range(5):
        await _put_region(admin, "eu-west", float(i))
    await compact(control.state.pool, keep_versions=1, keep_s=0)
    await edge.start()
    await _assert_converged(edge, control, edge_token)
    assert edge.loop is not None and edge.loop.snapshots == 1 and edge.loop.resyncs == 1
    await _put_region(admin, "eu-west", 33.0)
    await _assert_converged(edge, control, edge_token)
    assert edge.loop.snapshots == 1 and edge.loop.replies >= 1


async def test_epoch_change_makes_the_edge_resnapshot(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await _assert_converged(edge, control, edge_token)
    await control.state.pool.execute("UPDATE system_version SET epoch = 'restored-lineage'")
    await _put_region(admin, "eu-west", 3.0)
    await _assert_converged(edge, control, edge_token)
    assert edge.replica is not None and edge.replica.epoch == "restored-lineage"
    assert edge.loop is not None and edge.loop.snapshots == 2


async def test_database_restored_to_an_earlier_version(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, tmp_path: Path
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await _put_region(admin, "eu-west", 1.0)
    edge = await Edge(tmp_path / "edge", control.url, edge_token, wait_s=0.5).start()
    try:
        v = await _assert_converged(edge, control, edge_token)
        assert edge.loop is not None
        # The version went back (as after a restore): the edge's cursor is now in the future, which
        # the control plane answers with 410, and the edge re-snapshots (going back with it).
        await control.state.pool.execute("UPDATE system_version SET version = $1", v - 2)
        await control.state.pool.execute("DELETE FROM changes WHERE version > $1", v - 2)
        await asyncio.wait_for(edge.loop.wait_until(lambda loop: loop.snapshots == 2), 20)
        assert edge.replica is not None and edge.replica.applied_version == v - 2
        assert diff_states(edge.state(), (await snapshot_state(control.url, edge_token))[2]) == []
        # Writes after the restore reach the edge as diffs again.
        await _put_region(admin, "eu-west", 2.0)
        await _put_region(admin, "eu-west", 5.0)
        await _assert_converged(edge, control, edge_token)
        assert edge.replica.region("eu-west").lat == 5.0  # type: ignore[union-attr]
        assert edge.loop.snapshots == 2 and edge.loop.resyncs == 1
    finally:
        await edge.stop()


async def test_empty_reply_advances_the_edge_cursor(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge, db_url: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    v = await _assert_converged(edge, control, edge_token)
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("UPDATE system_version SET version = version + 1")
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(v + 1))
    finally:
        await conn.close()
    await edge.caught_up(v + 1)
    assert edge.loop is not None and edge.loop.snapshots == 1
    await edge.restart()
    assert edge.replica is not None and edge.replica.applied_version == v + 1, "the bookmark was stored on disk"


async def test_listeners_get_each_reply_and_a_diff_after_a_snapshot(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await _assert_converged(edge, control, edge_token)
    assert edge.replica is not None
    seen: list[list[Change]] = []
    edge.replica.add_listener(seen.append)
    r = await admin.post("/v1/connect", json={"key": "k", "template": "demo"})
    backend_id = r.json()["backend_id"]
    await _assert_converged(edge, control, edge_token)
    got = [(c.kind, c.id, c.op) for batch in seen for c in batch]
    assert got == [(ChangeKind.BACKEND, backend_id, ChangeOp.UPSERT), (ChangeKind.KEY, "k", ChangeOp.UPSERT)]
    seen.clear()
    # Stop the edge, change one region while compacting the diffs away, and restart: the snapshot
    # is announced to listeners as the difference it made.
    await edge.stop()
    await _put_region(admin, "eu-west", 44.0)
    await compact(control.state.pool, keep_versions=0, keep_s=0)
    await edge.start()
    edge.replica.add_listener(seen.append)
    v = await _assert_converged(edge, control, edge_token)
    assert edge.loop is not None and edge.loop.snapshots == 1
    changes = [c for batch in seen for c in batch]
    assert [(c.kind, c.id, c.op, c.version) for c in changes] == [(ChangeKind.REGION, "eu-west", ChangeOp.UPSERT, v)]
    assert changes[0].body is not None and changes[0].body["lat"] == 44.0


def _garbage_over_sqlite(directory: Path) -> None:
    (db,) = directory.glob("gen-*/cache.db")
    db.write_bytes(b"this is not a database " * 500)


def _garbage_marker(directory: Path) -> None:
    (directory / "CURRENT").write_bytes(b"\xff\xfe garbage")


def _missing_marker(directory: Path) -> None:
    (directory / "CURRENT").unlink()


def _marker_to_nowhere(directory: Path) -> None:
    (directory / "CURRENT").write_text("gen-999999\n")


@pytest.mark.parametrize("corrupt", [_garbage_over_sqlite, _garbage_marker, _missing_marker, _marker_to_nowhere])
async def test_corrupted_cache_directory_is_detected_and_rebuilt(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, edge: Edge, corrupt: object
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await admin.post("/v1/connect", json={"key": "k", "template": "demo"})
    await _assert_converged(edge, control, edge_token)
    await edge.stop()
    corrupt(edge.directory)  # type: ignore[operator]
    await edge.start()
    assert edge.replica is not None and edge.replica.rebuilt
    await _assert_converged(edge, control, edge_token)
    assert edge.loop is not None and edge.loop.snapshots == 1
    assert edge.replica.live_backend_for_key("k") is not None
    await edge.restart()  # and the rebuilt directory is sound
    assert edge.replica is not None and not edge.replica.rebuilt and edge.replica.live_backend_for_key("k")


async def test_edge_keeps_its_state_through_a_control_plane_outage(db_url: str, tmp_path: Path) -> None:
    settings = ControlSettings(port=0, admin_token=ADMIN_TOKEN)

    async def serve(port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, db_url), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "control plane did not start"
            await asyncio.sleep(0.01)
        return server, task

    server, task = await serve(0)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        token = (await admin.post("/v1/tokens", json={"name": "e", "scopes": ["edge"]})).json()["token"]
        await cluster(admin, token, ["eu-west"])
        backend_id = (await admin.post("/v1/connect", json={"key": "k", "template": "demo"})).json()["backend_id"]
        v, _, expected = await snapshot_state(url, token)
    edge = Edge(tmp_path / "edge", url, token, wait_s=1.0)
    await edge.start()
    try:
        await edge.caught_up(v)
        await edge.stop()  # (its long-poll would hold the server's shutdown for its wait)
        server.should_exit = True
        await task
        await edge.start()  # restarted while the control plane is down: the state comes from disk
        assert edge.loop is not None and edge.replica is not None
        await asyncio.wait_for(edge.loop.wait_until(lambda loop: loop.failures > 0), 10)
        assert not edge.loop.reachable
        assert edge.loop.last_error is not None and "ControlPlaneUnreachable" in edge.loop.last_error
        assert diff_states(edge.state(), expected) == []
        assert edge.replica.live_backend_for_key("k").id == backend_id  # type: ignore[union-attr]
        # The control plane comes back on the same address; the edge catches up by diff.
        server, task = await serve(port)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
            await heartbeat(url, token, "nd-eu-west", "eu-west", backends=[{"id": backend_id, "status": "ready"}])
            v2 = await version(admin)
        await edge.caught_up(v2)
        assert edge.loop.reachable and edge.snapshots == 1 and edge.loop.snapshots == 0
        assert edge.replica.backend(backend_id).status == "ready"
    finally:
        await edge.stop()
        server.should_exit = True
        await task
