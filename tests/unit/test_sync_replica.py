"""The edge replica on real diskcache files: applying, reopening, lookups, failures, corruption."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import diskcache
import pytest
from pydantic import ValidationError

from edge.replica import InvalidObject, Replica
from sync.client import ProtocolError, SnapshotObject
from sync.models import BackendStatus, Change, ChangeKind, ChangesReply
from sync.state import BackendState

K = ChangeKind


def _backend(bid: str, node: str = "nd-a", status: str = "ready", key: str | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "id": bid,
        "key": key,
        "node_id": node,
        "status": status,
        "region": "eu",
        "fencing_token": 1,
        "template_name": "demo",
        "template_id": "tp-1",
        "secret": "backend-secret",
        "created_at": "2024-01-01T00:00:00+00:00",
        "status_changed_at": datetime.now(UTC).isoformat(),
    } | kw


def _region(name: str, lat: float = 0.0) -> dict[str, Any]:
    return {"name": name, "lat": lat, "lon": 2.0, "edge_url": f"http://{name}.test", "capacity": None}


STATE: list[tuple[ChangeKind, str, dict[str, Any]]] = [
    (K.REGION, "eu", {"name": "eu", "lat": 1.5, "lon": 2.0, "edge_url": "http://eu.test", "capacity": None}),
    (K.NODE, "nd-a", {"id": "nd-a", "region": "eu", "address": "http://a.test", "capacity": 10}),
    (K.TEMPLATE, "tp-1", {"id": "tp-1", "spec": {"executor": "process", "argv": ["x"]}}),
    (K.TEMPLATE_NAME, "demo", {"name": "demo", "id": "tp-1"}),
    (
        K.SIGNING_KEY,
        "sk-1",
        {"id": "sk-1", "secret": "s", "created_at": "2024-01-01T00:00:00+00:00", "retired_at": None},
    ),
    (K.BACKEND, "bk-1", _backend("bk-1", key="doc")),
    (K.BACKEND, "bk-2", _backend("bk-2", status="terminated")),
    (K.KEY, "doc", {"key": "doc", "backend_id": "bk-1", "fencing_token": 1, "updated_at": "2024-01-01T00:00:00+00:00"}),
    (
        K.REVOCATION,
        "rv-1",
        {"id": "rv-1", "backend_id": "bk-1", "user_id": None, "revoked_at": "2024-01-01T00:00:00+00:00"},
    ),
]


async def _stream(
    items: list[tuple[ChangeKind, str, dict[str, Any]]], fail_after: int | None = None
) -> AsyncIterator[SnapshotObject]:
    for n, (kind, oid, body) in enumerate(items):
        if fail_after is not None and n == fail_after:
            raise ProtocolError("stream broke")
        yield SnapshotObject(kind, oid, body)
        await asyncio.sleep(0)


def _reply(
    since: int, to: int, changes: list[tuple[int, ChangeKind, str, dict[str, Any] | None]], epoch: str = "e1"
) -> ChangesReply:
    return ChangesReply.model_validate(
        {
            "epoch": epoch,
            "from": since,
            "to": to,
            "more": False,
            "changes": [
                {"version": v, "kind": k, "id": i, "op": "delete" if b is None else "upsert", "body": b}
                for v, k, i, b in changes
            ],
        }
    )


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    r = Replica.open(tmp_path / "cache")
    await r.apply_snapshot("e1", 10, _stream(STATE))
    try:
        yield r
    finally:
        r.close()


def _everything(r: Replica) -> dict[str, dict[str, Any]]:
    return {k.value: r.objects(k) for k in ChangeKind}


async def test_a_new_directory_is_empty_and_needs_a_snapshot(tmp_path: Path) -> None:
    r = Replica.open(tmp_path / "new")
    try:
        assert r.applied_version is None and r.epoch is None and not r.rebuilt
        assert r.regions() == [] and r.backend("bk-1") is None
    finally:
        r.close()


async def test_lookups_after_a_snapshot(replica: Replica) -> None:
    assert (replica.applied_version, replica.epoch) == (10, "e1")
    backend = replica.backend("bk-1")
    assert isinstance(backend, BackendState) and backend.key == "doc" and backend.status is BackendStatus.READY
    assert replica.live_backend_for_key("doc") == backend
    assert replica.key("doc").fencing_token == 1  # type: ignore[union-attr]
    template = replica.template_by_name("demo")
    assert template is not None and template.id == "tp-1" and template.spec.argv == ["x"]
    assert replica.template("tp-1") == template
    assert replica.region("eu").lat == 1.5 and [r.name for r in replica.regions()] == ["eu"]  # type: ignore[union-attr]
    assert replica.node("nd-a").capacity == 10 and len(replica.nodes()) == 1  # type: ignore[union-attr]
    assert replica.signing_key("sk-1").secret == "s"  # type: ignore[union-attr]
    assert [r.id for r in replica.revocations("bk-1")] == ["rv-1"]
    assert sorted(b.id for b in replica.backends_on_node("nd-a")) == ["bk-1", "bk-2"]
    # Lookups return frozen models: nobody can change the replica through one.
    with pytest.raises(ValidationError):
        backend.status = BackendStatus.TERMINATED
    assert replica.backend("bk-1").status is BackendStatus.READY  # type: ignore[union-attr]


async def test_an_object_that_is_not_its_model_is_refused_and_nothing_is_applied(replica: Replica) -> None:
    bad = {"id": "bk-9", "status": "ready"}  # no node, template, secret, fencing token
    with pytest.raises(InvalidObject):
        await replica.apply_changes(
            _reply(10, 11, [(11, K.REGION, "eu", STATE[0][2] | {"lat": 9.0}), (11, K.BACKEND, "bk-9", bad)])
        )
    assert replica.applied_version == 10 and replica.backend("bk-9") is None and replica.region("eu").lat == 1.5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "live"),
    [("scheduled", True), ("starting", True), ("ready", True), ("draining", False), ("terminated", False)],
)
async def test_live_backend_for_key_follows_status(replica: Replica, status: str, live: bool) -> None:
    await replica.apply_changes(_reply(10, 11, [(11, K.BACKEND, "bk-1", _backend("bk-1", key="doc", status=status))]))
    assert (replica.live_backend_for_key("doc") is not None) is live
    await replica.apply_changes(_reply(11, 12, [(12, K.BACKEND, "bk-1", None)]))
    assert replica.live_backend_for_key("doc") is None, "a key whose backend is unknown has no live backend"


async def test_changes_keep_the_indexes_right_and_survive_a_reopen(replica: Replica, tmp_path: Path) -> None:
    await replica.apply_changes(
        _reply(
            10,
            12,
            [
                (11, K.BACKEND, "bk-1", _backend("bk-1", node="nd-b", key="doc")),  # moved to another node
                (11, K.REVOCATION, "rv-1", None),
                (
                    12,
                    K.REVOCATION,
                    "rv-2",
                    {"id": "rv-2", "backend_id": "bk-2", "user_id": "u", "revoked_at": "2024-01-02T00:00:00+00:00"},
                ),
                (12, K.REGION, "eu", None),
            ],
        )
    )
    assert [b.id for b in replica.backends_on_node("nd-a")] == ["bk-2"]
    assert [b.id for b in replica.backends_on_node("nd-b")] == ["bk-1"]
    assert replica.revocations("bk-1") == [] and [r.id for r in replica.revocations("bk-2")] == ["rv-2"]
    assert replica.region("eu") is None and replica.applied_version == 12
    before = _everything(replica)
    replica.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert (again.applied_version, again.epoch) == (12, "e1") and not again.rebuilt
        assert _everything(again) == before
        assert [b.id for b in again.backends_on_node("nd-b")] == ["bk-1"]
    finally:
        again.close()


async def test_an_empty_bookmark_moves_the_version_on_disk(replica: Replica, tmp_path: Path) -> None:
    await replica.apply_changes(_reply(10, 15, []))
    assert replica.applied_version == 15
    replica.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert again.applied_version == 15
    finally:
        again.close()


async def test_a_broken_snapshot_changes_nothing_in_memory_or_on_disk(replica: Replica, tmp_path: Path) -> None:
    calls: list[list[Change]] = []
    replica.add_listener(calls.append)
    before = _everything(replica)
    replacement = [(K.REGION, "us", _region("us"))] * 3
    with pytest.raises(ProtocolError):
        await replica.apply_snapshot("e2", 50, _stream(replacement, fail_after=2))
    assert (replica.applied_version, replica.epoch) == (10, "e1") and _everything(replica) == before
    assert calls == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["CURRENT", "gen-000001"]
    replica.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert again.applied_version == 10 and _everything(again) == before
    finally:
        again.close()


async def test_a_cancelled_snapshot_changes_nothing(replica: Replica, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[SnapshotObject]:
        n = 0
        while True:
            n += 1
            yield SnapshotObject(K.REGION, f"r{n}", _region(f"r{n}"))
            if n == 5000:
                started.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(replica.apply_snapshot("e2", 99, endless()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert replica.applied_version == 10 and replica.region("r1") is None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["CURRENT", "gen-000001"]


async def test_a_second_snapshot_replaces_everything_and_tells_listeners_the_difference(
    replica: Replica, tmp_path: Path
) -> None:
    calls: list[list[Change]] = []
    replica.add_listener(calls.append)

    def failing(_: list[Change]) -> None:
        raise ZeroDivisionError

    replica.add_listener(failing)  # a failing listener does not stop the others
    changed = [item for item in STATE if item[1] not in ("bk-2", "eu")]
    changed.append((K.REGION, "eu", STATE[0][2] | {"lat": 9.0}))
    changed.append((K.REGION, "us", _region("us", 3.0)))
    await replica.apply_snapshot("e2", 30, _stream(changed))
    assert (replica.applied_version, replica.epoch) == (30, "e2")
    (diff,) = calls
    assert sorted((c.kind.value, c.id, c.op.value, c.version) for c in diff) == [
        ("backend", "bk-2", "delete", 30),
        ("region", "eu", "upsert", 30),
        ("region", "us", "upsert", 30),
    ]
    assert replica.backend("bk-2") is None and [b.id for b in replica.backends_on_node("nd-a")] == ["bk-1"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["CURRENT", "gen-000002"]
    await replica.apply_changes(_reply(30, 31, [(31, K.REGION, "us", None)], epoch="e2"))
    assert [[(c.kind, c.id) for c in batch] for batch in calls[1:]] == [[(K.REGION, "us")]]


async def test_terminated_backends_are_pruned_after_the_retention(replica: Replica, tmp_path: Path) -> None:
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    await replica.apply_changes(
        _reply(
            10,
            11,
            [
                (11, K.BACKEND, "bk-1", _backend("bk-1", key="doc", status="terminated", status_changed_at=long_ago)),
            ],
        )
    )
    assert replica.backend("bk-1") is not None, "pruning waits for its period"
    replica._next_prune = 0.0
    await replica.apply_changes(_reply(11, 12, [(12, K.REGION, "us", _region("us"))]))
    assert replica.backend("bk-1") is None and replica.revocations("bk-1") == []
    assert replica.backend("bk-2") is not None, "recently terminated backends stay"
    assert replica.key("doc") is not None, "keys stay: they carry the fencing-token counter"
    replica.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert again.backend("bk-1") is None and again.count(K.REVOCATION) == 0 and again.applied_version == 12
    finally:
        again.close()


async def test_a_generation_left_by_a_crash_mid_snapshot_is_discarded(replica: Replica, tmp_path: Path) -> None:
    before = _everything(replica)
    replica.close()
    half = diskcache.Cache(str(tmp_path / "cache" / "gen-000002"))
    half.set("region/us", b'{"name":"us"}')
    half.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert again.applied_version == 10 and _everything(again) == before and not again.rebuilt
        assert not (tmp_path / "cache" / "gen-000002").exists()
    finally:
        again.close()


def _corrupt_meta_json(cache: diskcache.Cache) -> None:
    cache.set("!meta", b"{not json")


def _corrupt_meta_missing(cache: diskcache.Cache) -> None:
    cache.delete("!meta")


def _corrupt_meta_types(cache: diskcache.Cache) -> None:
    cache.set("!meta", b'{"applied_version": "ten", "epoch": "e1"}')


def _corrupt_object_json(cache: diskcache.Cache) -> None:
    cache.set("backend/bk-1", b"\x00\x01garbage")


def _corrupt_object_not_bytes(cache: diskcache.Cache) -> None:
    cache.set("backend/bk-1", {"a pickled": "dict"})


def _corrupt_unknown_kind(cache: diskcache.Cache) -> None:
    cache.set("spaceship/x", b"{}")


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_meta_json,
        _corrupt_meta_missing,
        _corrupt_meta_types,
        _corrupt_object_json,
        _corrupt_object_not_bytes,
        _corrupt_unknown_kind,
    ],
)
async def test_corrupt_entries_are_detected_at_open(replica: Replica, tmp_path: Path, corrupt: Any) -> None:
    replica.close()
    (gen,) = (tmp_path / "cache").glob("gen-*")
    cache = diskcache.Cache(str(gen))
    corrupt(cache)
    cache.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert again.rebuilt and again.applied_version is None and again.backend("bk-1") is None
        assert list((tmp_path / "cache").iterdir()) == [], "the untrusted files are gone"
        await again.apply_snapshot("e1", 10, _stream(STATE))
        assert again.applied_version == 10 and again.live_backend_for_key("doc") is not None
    finally:
        again.close()


async def test_a_growing_overlay_is_rebased_into_a_fresh_generation(
    replica: Replica, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge.replica.REBASE_OVERLAY_MIN", 5)
    version = 10
    for n in range(12):  # each reply adds to the overlay: a region, then its deletion
        body = None if n % 2 else _region(f"r{n}", float(n))
        await replica.apply_changes(_reply(version, version + 1, [(version + 1, K.REGION, f"r{n - n % 2}", body)]))
        version += 1
    assert not (tmp_path / "cache" / "gen-000001").exists(), "the overlay was folded into a new base"
    (gen,) = (tmp_path / "cache").glob("gen-*")
    cache = diskcache.Cache(str(gen))
    try:
        overlay = [k for k in cache if not str(k).startswith("!")]
    finally:
        cache.close()
    assert len(overlay) <= 12 - 10 + 1, "only the replies since the re-base are in the overlay"
    before = _everything(replica)
    replica.close()
    again = Replica.open(tmp_path / "cache")
    try:
        assert again.applied_version == version and _everything(again) == before and not again.rebuilt
        assert again.region("r0") is None
    finally:
        again.close()
