"""Faults between the edge and the control plane, injected by a scripted fake server (see
fake_control.py): the edge keeps its last good state, logs, backs off and recovers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from sync.client import ClientTimeouts, ProtocolError, SyncClient
from sync.errors import (
    ControlPlaneUnreachable,
    InternalError,
    SnapshotRequired,
    TooManyRequests,
    Unauthorized,
)
from sync.loop import SyncLoop
from tests.integration import fake_control as fc
from tests.integration.sync_support import Edge


@pytest.fixture
async def fake() -> AsyncIterator[fc.FakeControl]:
    server = await fc.FakeControl().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def edge(fake: fc.FakeControl, tmp_path: Path) -> AsyncIterator[Edge]:
    e = Edge(tmp_path / "edge", fake.url, "token", wait_s=5.0)
    try:
        yield e
    finally:
        await e.stop()


def _loop(e: Edge) -> SyncLoop:
    assert e.loop is not None
    return e.loop


async def _failures(e: Edge, n: int) -> None:
    await asyncio.wait_for(_loop(e).wait_until(lambda loop: loop.failures >= n), 10)


async def _started_at_v5(fake: fc.FakeControl, e: Edge) -> None:
    """The edge holds version 5 (one region, lat 5) from a good snapshot."""
    await fake.snapshot_actions.put(fc.snapshot(5, [("region", "r", fc.region("r", 5.0))]))
    await e.start()
    await e.caught_up(5)


def _lat(e: Edge) -> float:
    assert e.replica is not None
    found = e.replica.region("r")
    assert found is not None
    return found.lat


@pytest.mark.parametrize(
    "bad",
    [
        fc.raw_reply(b"{not json"),
        fc.json_reply({"epoch": fc.EPOCH, "from": 5}),  # fields missing
        fc.json_reply({"epoch": fc.EPOCH, "from": 5, "to": 6, "more": False, "changes": [{"version": "x"}]}),
        fc.json_reply([1, 2, 3]),
    ],
)
async def test_malformed_changes_reply(
    fake: fc.FakeControl, edge: Edge, bad: fc.Action, caplog: pytest.LogCaptureFixture
) -> None:
    await _started_at_v5(fake, edge)
    with caplog.at_level(logging.WARNING, logger="sync.loop"):
        await fake.changes_actions.put(bad)
        await _failures(edge, 1)
    assert "ProtocolError" in (_loop(edge).last_error or "") and "ProtocolError" in caplog.text
    assert edge.replica is not None and edge.replica.applied_version == 5 and _lat(edge) == 5.0
    await fake.changes_actions.put(fc.changes(5, 6, [(6, "region", "r", fc.region("r", 6.0))]))
    await edge.caught_up(6)
    assert _lat(edge) == 6.0 and fake.count("snapshot") == 1, "a malformed reply is retried, not a gap"


@pytest.mark.parametrize(
    "broken",
    [
        fc.snapshot(9, [("region", "r", fc.region("r", 9.0))], end=False),  # truncated
        fc.snapshot(9, [("region", "r", fc.region("r", 9.0))], count=2),  # says it holds more
        fc.snapshot(9, [("region", "r", fc.region("r", 9.0))], trailing=b'{"kind": "region"}\n'),
        fc.snapshot(9, [("nonsense", "r", fc.region("r", 9.0))]),
        fc.raw_reply(b'{"epoch": "e", "version": -1, "kinds": []}\n'),
    ],
)
async def test_broken_snapshot_leaves_the_previous_state(fake: fc.FakeControl, edge: Edge, broken: fc.Action) -> None:
    await _started_at_v5(fake, edge)
    # A gap (the reply starts at 7, the edge is at 5) sends the edge to a snapshot, which breaks.
    await fake.changes_actions.put(fc.changes(7, 8, [(8, "region", "r", fc.region("r", 8.0))]))
    await fake.snapshot_actions.put(broken)
    await _failures(edge, 1)
    assert edge.replica is not None and edge.replica.applied_version == 5 and _lat(edge) == 5.0
    assert sorted(p.name for p in edge.directory.iterdir()) == ["CURRENT", "gen-000001"], "nothing half-written left"
    await edge.restart()  # and on disk, too, the old state is whole
    assert edge.replica is not None and edge.replica.applied_version == 5 and _lat(edge) == 5.0
    # The restarted loop resumes from 5, meets the gap again, and this time gets a whole snapshot.
    await fake.changes_actions.put(fc.changes(7, 8, [(8, "region", "r", fc.region("r", 8.0))]))
    await fake.snapshot_actions.put(fc.snapshot(9, [("region", "r", fc.region("r", 9.0))]))
    await fake.changes_actions.put(fc.changes(9, 10, [(10, "region", "r", fc.region("r", 10.0))]))
    await edge.caught_up(10)
    assert _lat(edge) == 10.0


async def test_truncated_first_snapshot_leaves_the_edge_empty(fake: fc.FakeControl, edge: Edge) -> None:
    await fake.snapshot_actions.put(fc.snapshot(3, [("region", "r", fc.region("r", 3.0))], end=False))
    await edge.start()
    await _failures(edge, 1)
    assert edge.replica is not None and edge.replica.applied_version is None and edge.replica.region("r") is None
    assert list(edge.directory.iterdir()) == []
    await fake.snapshot_actions.put(fc.snapshot(3, [("region", "r", fc.region("r", 3.0))]))
    await edge.caught_up(3)


@pytest.mark.parametrize(
    "gap",
    [
        fc.changes(6, 7, [(7, "region", "r", fc.region("r", 7.0))]),  # skips version 6
        fc.changes(5, 7, [(7, "region", "r", fc.region("r", 7.0)), (6, "region", "r", fc.region("r", 6.0))]),
        fc.changes(5, 6, [(7, "region", "r", fc.region("r", 7.0))]),  # beyond `to`
        fc.changes(5, 6, [(5, "region", "r", fc.region("r", 7.0))]),  # not after `from`
        fc.changes(5, 4, []),  # goes back
        fc.changes(5, 6, [(6, "region", "r", fc.region("r", 6.0))], epoch="epoch-b"),  # another database
    ],
)
async def test_a_reply_that_does_not_follow_on_makes_the_edge_resnapshot(
    fake: fc.FakeControl, edge: Edge, gap: fc.Action
) -> None:
    await _started_at_v5(fake, edge)
    await fake.changes_actions.put(gap)
    await fake.wait_calls("snapshot", 2)
    assert edge.replica is not None and edge.replica.applied_version == 5 and _lat(edge) == 5.0, "gap not applied"
    await fake.snapshot_actions.put(fc.snapshot(8, [("region", "r", fc.region("r", 8.0))], epoch="epoch-b"))
    await edge.caught_up(8)
    assert _lat(edge) == 8.0 and edge.replica.epoch == "epoch-b" and _loop(edge).resyncs == 1
    await fake.wait_calls("changes", 2)
    polls = [query for _, endpoint, query in fake.calls if endpoint == "changes"]
    assert polls[-1]["since"] == "8", "the next long-poll starts from the snapshot's version"


async def test_410_makes_the_edge_resnapshot(fake: fc.FakeControl, edge: Edge) -> None:
    await _started_at_v5(fake, edge)
    await fake.changes_actions.put(fc.error_reply(410, "snapshot_required"))
    await fake.snapshot_actions.put(fc.snapshot(20, [("region", "r", fc.region("r", 20.0))]))
    await edge.caught_up(20)
    assert _lat(edge) == 20.0 and fake.count("snapshot") == 2


async def test_500_then_recovery(fake: fc.FakeControl, edge: Edge) -> None:
    await _started_at_v5(fake, edge)
    assert _loop(edge).reachable
    await fake.changes_actions.put(fc.error_reply(500, "internal"))
    await fake.changes_actions.put(fc.raw_reply(b"<html>bad gateway</html>", status=502))
    await _failures(edge, 2)
    assert not _loop(edge).reachable and edge.replica is not None and _lat(edge) == 5.0
    await fake.changes_actions.put(fc.changes(5, 6, [(6, "region", "r", fc.region("r", 6.0))]))
    await edge.caught_up(6)
    assert _loop(edge).reachable and _loop(edge).last_error is None


async def test_the_first_poll_after_an_outage_does_not_wait(fake: fc.FakeControl, edge: Edge) -> None:
    """An idle control plane that comes back must not hold the edge in 'unreachable' (and its
    journal unreplayed) for a whole long-poll: the first poll after a failure asks without waiting."""
    await _started_at_v5(fake, edge)
    waits: list[str] = []

    def recorded(action: fc.Action) -> fc.Action:
        async def act(request: web.Request) -> web.StreamResponse:
            waits.append(request.query["wait"])
            return await action(request)

        return act

    await fake.changes_actions.put(fc.error_reply(500, "internal"))
    await _failures(edge, 1)
    await fake.changes_actions.put(recorded(fc.changes(5, 6, [(6, "region", "r", fc.region("r", 6.0))])))
    await fake.changes_actions.put(recorded(fc.changes(6, 7, [(7, "region", "r", fc.region("r", 7.0))])))
    await edge.caught_up(7)
    assert [float(w) for w in waits] == [0.0, 5.0]


async def test_a_hung_control_plane_is_given_up_on(fake: fc.FakeControl, tmp_path: Path) -> None:
    e = Edge(tmp_path / "e", fake.url, "token", wait_s=0.2, timeouts=ClientTimeouts(changes_margin_s=0.3))
    try:
        await _started_at_v5(fake, e)
        await fake.changes_actions.put(fc.hang())
        await _failures(e, 1)
        assert not _loop(e).reachable and "ControlPlaneUnreachable" in (_loop(e).last_error or "")
        assert _lat(e) == 5.0
        await fake.changes_actions.put(fc.changes(5, 6, [(6, "region", "r", fc.region("r", 6.0))]))
        await e.caught_up(6)
        assert _loop(e).reachable
    finally:
        await e.stop()


async def test_429_on_snapshot_waits_for_retry_after(fake: fc.FakeControl, edge: Edge) -> None:
    await fake.snapshot_actions.put(fc.error_reply(429, "too_many_requests", headers={"Retry-After": "0.4"}))
    await fake.snapshot_actions.put(fc.snapshot(5, [("region", "r", fc.region("r", 5.0))]))
    await edge.start()
    await edge.caught_up(5)
    first, second = [t for t, endpoint, _ in fake.calls if endpoint == "snapshot"]
    assert second - first >= 0.4
    assert _loop(edge).reachable, "a 429 is an answer: the control plane is there"


async def test_stop_during_a_long_poll_is_clean(fake: fc.FakeControl, edge: Edge) -> None:
    await _started_at_v5(fake, edge)
    await fake.wait_calls("changes", 1)
    await _loop(edge).stop()
    assert edge.replica is not None and edge.replica.applied_version == 5


# ---- the client's error mapping ----------------------------------------------------------------


async def test_client_maps_answers_and_failures_to_typed_errors(fake: fc.FakeControl) -> None:
    async with SyncClient(fake.url, "t") as client:
        await fake.changes_actions.put(fc.error_reply(410, "snapshot_required"))
        with pytest.raises(SnapshotRequired):
            await client.changes(1, 0)
        await fake.changes_actions.put(fc.error_reply(401, "unauthorized"))
        with pytest.raises(Unauthorized):
            await client.changes(1, 0)
        await fake.changes_actions.put(fc.error_reply(429, "too_many_requests", headers={"Retry-After": "3"}))
        with pytest.raises(TooManyRequests) as too_many:
            await client.changes(1, 0)
        assert too_many.value.retry_after_s == 3.0
        await fake.changes_actions.put(fc.raw_reply(b"oops", status=500))
        with pytest.raises(InternalError):
            await client.changes(1, 0)
        await fake.changes_actions.put(fc.raw_reply(b"", status=503))
        with pytest.raises(ControlPlaneUnreachable):
            await client.changes(1, 0)
        await fake.changes_actions.put(fc.raw_reply(b"[]"))
        with pytest.raises(ProtocolError) as malformed:
            await client.changes(1, 0)
        assert malformed.value.__cause__ is not None
    async with SyncClient("http://127.0.0.1:9", "t", timeouts=ClientTimeouts(connect_s=2)) as nowhere:
        with pytest.raises(ControlPlaneUnreachable) as refused:
            await nowhere.changes(1, 0)
        assert isinstance(refused.value.__cause__, OSError)


async def test_client_reads_long_snapshot_lines(fake: fc.FakeControl) -> None:
    big = fc.region("r", 1.0) | {"edge_url": "http://" + "x" * 300_000 + ".test"}
    await fake.snapshot_actions.put(fc.snapshot(2, [("region", "r", big)]))
    async with SyncClient(fake.url, "t") as client, client.snapshot() as snap:
        objects = [o async for o in snap.objects()]
    assert snap.version == 2 and objects[0].body == big
