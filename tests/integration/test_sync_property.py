"""Property: whatever the interleaving of writes, compactions and edge restarts, every edge replica
ends equal to the control plane's state at the same version (read from a fresh snapshot)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.services.compaction import compact
from tests.conftest import RunningControl
from tests.helpers import cluster, heartbeat
from tests.integration.sync_support import Edge, current_version, diff_states, snapshot_state

REGIONS = ["eu-west", "us-east"]
KEYS = [f"k{i}" for i in range(4)]

Op = tuple[Any, ...]
ops = st.one_of(
    st.tuples(st.just("region"), st.sampled_from(REGIONS), st.floats(-89, 89, allow_nan=False)),
    st.tuples(st.just("template"), st.sampled_from(["demo", "other"]), st.integers(0, 2)),
    st.tuples(st.just("connect"), st.sampled_from(KEYS), st.sampled_from(REGIONS)),
    st.tuples(st.just("status"), st.integers(0, 20), st.sampled_from(["starting", "ready"])),
    st.tuples(st.just("terminate"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("revoke"), st.integers(0, 20), st.sampled_from([None, "u1"])),
    st.tuples(st.just("rotate")),
    st.tuples(st.just("compact"), st.integers(0, 3)),
    st.tuples(st.just("restart"), st.integers(0, 1)),
    st.tuples(st.just("catch_up"), st.integers(0, 1)),
)


@dataclass
class World:
    control: RunningControl
    admin: httpx.AsyncClient
    edge_token: str
    root: Path
    backends: list[tuple[str, str]]  # (backend id, node id), in creation order
    runs: itertools.count[int]


@pytest.fixture
async def world(control: RunningControl, admin: httpx.AsyncClient, edge_token: str, tmp_path: Path) -> World:
    await cluster(admin, edge_token, REGIONS)
    return World(control, admin, edge_token, tmp_path, [], itertools.count())


async def _apply(world: World, edges: list[Edge], op: Op) -> None:
    admin, url, token = world.admin, world.control.url, world.edge_token
    kind = op[0]
    if kind == "region":
        r = await admin.put(f"/v1/regions/{op[1]}", json={"lat": op[2], "lon": 1.0, "edge_url": "http://r.test"})
        assert r.status_code == 200, r.text
    elif kind == "template":
        r = await admin.put(f"/v1/templates/{op[1]}", json={"executor": "process", "argv": ["run", str(op[2])]})
        assert r.status_code == 200, r.text
    elif kind == "connect":
        await heartbeat(url, token, f"nd-{op[2]}", op[2])  # keep the node healthy
        r = await admin.post("/v1/connect", json={"key": op[1], "template": "demo", "region": op[2]})
        assert r.status_code == 200, r.text
        if r.json()["spawned"]:
            world.backends.append((r.json()["backend_id"], f"nd-{op[2]}"))
    elif kind in ("status", "terminate", "revoke") and world.backends:
        backend_id, node = world.backends[op[1] % len(world.backends)]
        if kind == "status":
            report = [{"id": backend_id, "status": op[2], "address": "127.0.0.1:1"}]
            assert (await heartbeat(url, token, node, node[3:], backends=report)).status_code == 200
        elif kind == "terminate":
            r = await admin.post(f"/v1/backends/{backend_id}/terminate", json={"hard": op[2]})
            assert r.status_code == 200, r.text
        else:
            r = await admin.post(f"/v1/backends/{backend_id}/revoke", json={"user": op[2]})
            assert r.status_code in (200, 410), r.text
    elif kind == "rotate":
        assert (await admin.post("/v1/signing-keys/rotate")).status_code == 200
    elif kind == "compact":
        await compact(world.control.state.pool, keep_versions=op[1], keep_s=0)
    elif kind == "restart":
        await edges[op[1]].restart()
    elif kind == "catch_up":
        await edges[op[1]].caught_up(await current_version(world.control.db_url))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(ops, min_size=1, max_size=20))
async def test_replicas_converge_to_the_control_plane_state(world: World, script: list[Op]) -> None:
    run = next(world.runs)
    edges = [Edge(world.root / f"run{run}-edge{i}", world.control.url, world.edge_token) for i in range(2)]
    try:
        for edge in edges:
            await edge.start()
        for op in script:
            await _apply(world, edges, op)
        version, epoch, expected = await snapshot_state(world.control.url, world.edge_token)
        for n, edge in enumerate(edges):
            await edge.caught_up(version)
            assert edge.replica is not None
            assert (edge.replica.applied_version, edge.replica.epoch) == (version, epoch)
            problems = diff_states(edge.state(), expected)
            assert problems == [], f"edge {n} diverged after {script}: " + "\n".join(problems)
    finally:
        for edge in edges:
            await edge.stop()
