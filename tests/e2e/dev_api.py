"""What the end-to-end tests do to a dev cluster from outside: start one for a module, connect a
key through an edge with the admin token, and poll another process's state until it holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from meridian.dev import DevCluster
from sync.net import free_port_block

ADMIN = "e2e-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}

T = TypeVar("T")


@contextmanager
def running_cluster(regions: list[str], data_dir: Path) -> Iterator[DevCluster]:
    """A started dev cluster (PostgreSQL, control plane, one edge per region), stopped on exit."""
    dev = DevCluster(regions, free_port_block(len(regions) + 1), data_dir, ADMIN)
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()


def connect(cluster: DevCluster, edge: int, **body: object) -> dict[str, Any]:
    """`POST /v1/connect` through edge number `edge` (template `demo` unless `body` names one)."""
    r = httpx.post(f"{cluster.edge_url(edge)}/v1/connect", json={"template": "demo", **body}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def wait_for(predicate: Callable[..., T | None], timeout_s: float, what: str) -> T:
    """Poll another process's state (no event crosses the process boundary) until `predicate`
    returns something true, and return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def edge_status(cluster: DevCluster, edge: int) -> dict[str, Any]:
    """`GET /v1/edge/status` of edge number `edge` (its view of the control plane, its journal)."""
    status: dict[str, Any] = httpx.get(f"{cluster.edge_url(edge)}/v1/edge/status", timeout=5).json()
    return status


def serves(url: str, backend_id: str) -> bool:
    """Whether the connect URL `url` reaches the backend `backend_id` now."""
    try:
        r = httpx.get(url + "info", timeout=5)
    except httpx.TransportError:
        return False
    return r.status_code == 200 and r.json()["backend_id"] == backend_id
