"""Warm pools across an edge SIGKILLed and restarted on its data directory (real processes): the
claimed member is adopted as the backend it became (found by MERIDIAN_POOL_MEMBER, not by a key it
never had in its environment), the unclaimed members the dead edge left are killed (no journal
names them), and the new edge's pool fills again."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meridian import faults
from meridian.dev import DevCluster
from tests.e2e.dev_api import AUTH, running_cluster
from tests.e2e.dev_api import connect as _connect
from tests.e2e.dev_api import edge_status as _status
from tests.e2e.dev_api import wait_for as _wait_for
from tests.helpers import DEMO_TEMPLATE

POOLED = {**DEMO_TEMPLATE, "warm_pool": 2, "claim_path": "/_meridian/claim"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    with running_cluster(["eu-west"], tmp_path_factory.mktemp("warmpool")) as dev:
        try:
            yield dev
        finally:
            for pid in pool_processes(node_of(dev)):  # whatever a failed test left behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def node_of(cluster: DevCluster) -> str:
    return str(_status(cluster, 0)["node_id"])


def pool_processes(node_id: str) -> set[int]:
    """Group leaders started as warm-pool members of `node_id` (claimed or not)."""
    wanted = f"MERIDIAN_POOL_NODE={node_id}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                pid = int(entry.name)
                if wanted in (entry / "environ").read_bytes().split(b"\0") and os.getpgid(pid) == pid:
                    found.add(pid)
    return found


def ready_members(cluster: DevCluster, template_id: str) -> int:
    return int(_status(cluster, 0)["warm_pools"].get(template_id, 0))


def test_an_edge_killed_adopts_its_claimed_member_and_kills_the_unclaimed_ones(cluster: DevCluster) -> None:
    r = httpx.put(f"{cluster.control_url}/v1/templates/pooled", json=POOLED, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    template_id = r.json()["id"]
    _wait_for(lambda: ready_members(cluster, template_id) == 2, 60, "a full pool")
    answer = _connect(cluster, 0, key="doc-crash", template="pooled")
    seen = _wait_for(lambda: httpx.get(answer["url"] + "info", timeout=5).json(), 30, "the claimed backend")
    assert seen["claimed"] is True and seen["key"] == "doc-crash"
    _wait_for(lambda: ready_members(cluster, template_id) == 2, 60, "the pool to refill")
    node = node_of(cluster)
    unclaimed = pool_processes(node) - {seen["pid"]}
    assert len(unclaimed) == 2

    faults.kill(cluster, "edge eu-west")
    faults.restart(cluster, "edge eu-west", f"{cluster.edge_url(0)}/v1/edge/status")

    again = httpx.get(answer["url"] + "info", timeout=10).json()
    assert (again["pid"], again["key"], again["claimed"]) == (seen["pid"], "doc-crash", True), "adopted as is"
    assert not (pool_processes(node) & unclaimed), "the dead edge's unclaimed members are gone"
    _wait_for(lambda: ready_members(cluster, template_id) == 2, 60, "the new edge's pool")
    row = httpx.get(f"{cluster.control_url}/v1/backends/{answer['backend_id']}", headers=AUTH, timeout=5).json()
    assert row["status"] == "ready"
