"""A dev cluster for the edge benchmarks (embedded PostgreSQL, control plane, one edge per region,
each a real process on loopback), and the calls they make against it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ADMIN_TOKEN
from meridian.dev import DevCluster
from sync.net import free_port_block

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextlib.contextmanager
def dev_cluster(
    data_dir: Path, regions: list[str] | None = None, edge_args: tuple[str, ...] = ()
) -> Iterator[DevCluster]:
    """Started cluster; every process of it (backends included) stopped on exit, failure included."""
    regions = regions or ["eu-west"]
    cluster = DevCluster(regions, free_port_block(len(regions) + 1), data_dir, ADMIN_TOKEN, edge_args=edge_args)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def edge_pid(cluster: DevCluster, index: int = 0) -> int:
    return cluster.procs[1 + index][1].pid


async def connect(session: aiohttp.ClientSession, edge_url: str, key: str, template: str = "demo") -> dict[str, Any]:
    async with session.post(f"{edge_url}/v1/connect", json={"key": key, "template": template}, headers=AUTH) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"connect {key}: {r.status} {body}")
        return dict(body)


async def edge_caught_up(session: aiohttp.ClientSession, cluster: DevCluster, timeout_s: float = 30) -> None:
    """Wait until edge 0's replica has applied the control plane's current system version."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(f"{cluster.control_url}/healthz") as r:
            version = (await r.json())["version"]
        async with session.get(f"{cluster.edge_url(0)}/v1/edge/status") as r:
            applied = (await r.json())["applied_version"]
        if applied >= version:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"edge replica did not catch up with the control plane in {timeout_s}s")


async def ready_backend(
    session: aiohttp.ClientSession, cluster: DevCluster, key: str, timeout_s: float = 60, template: str = "demo"
) -> dict[str, Any]:
    """Connect `key` at edge 0, wait until its backend is ready and the edge's replica knows it
    (so the next connect is answered by the edge alone); returns the connect answer plus the
    backend's direct `address` (host:port) as the control plane reports it."""
    await edge_caught_up(session, cluster)  # the edge knows the API tokens
    answer = await connect(session, cluster.edge_url(0), key, template)
    deadline = time.monotonic() + timeout_s
    backend: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with session.get(f"{cluster.control_url}/v1/backends/{answer['backend_id']}", headers=AUTH) as r:
            backend = await r.json()
        if backend.get("status") == "ready" and backend.get("address"):
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError(f"backend of {key} not ready in {timeout_s}s: {backend}")
    await edge_caught_up(session, cluster)  # the edge's replica has the backend as ready
    return answer | {"address": backend["address"]}
