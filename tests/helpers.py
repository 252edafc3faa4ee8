"""Small builders shared by tests: regions, nodes (via real heartbeats) and templates."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from sync.catalog import KNOWN_REGIONS

DEMO_TEMPLATE = {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"]}


async def add_region(admin: httpx.AsyncClient, name: str, capacity: int | None = None) -> dict[str, Any]:
    known = KNOWN_REGIONS[name]
    body = {"lat": known.lat, "lon": known.lon, "edge_url": f"http://{name}.edge.test"}
    if capacity is not None:
        body["capacity"] = capacity
    r = await admin.put(f"/v1/regions/{name}", json=body)
    assert r.status_code == 200, r.text
    region: dict[str, Any] = r.json()
    return region


async def heartbeat(
    base_url: str,
    edge_token: str,
    node_id: str,
    region: str,
    capacity: int = 100,
    backends: list[dict[str, Any]] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {edge_token}"}) as c:
        return await c.post(
            "/v1/nodes/heartbeat",
            json={
                "node_id": node_id,
                "region": region,
                "address": f"http://{node_id}.test:9000",
                "capacity": capacity,
                "applied_version": 0,
                "backends": backends or [],
            },
        )


async def cluster(admin: httpx.AsyncClient, edge_token: str, regions: list[str], capacity: int = 100) -> None:
    """Regions with one healthy node each, and the `demo` template."""
    for name in regions:
        await add_region(admin, name)
        r = await heartbeat(str(admin.base_url), edge_token, f"nd-{name}", name, capacity)
        assert r.status_code == 200, r.text
    r = await admin.put("/v1/templates/demo", json=DEMO_TEMPLATE)
    assert r.status_code == 200, r.text


async def version(admin: httpx.AsyncClient) -> int:
    r = await admin.get("/healthz")
    assert r.status_code == 200, r.text
    return int(r.json()["version"])
