"""Regions and the edge nodes in them."""

from __future__ import annotations

import asyncpg

from control.queries import edge_nodes, regions
from control.versioning import write_transaction
from sync.models import ChangeKind, NodeView, RegionIn, RegionView
from sync.timing import NODE_LOST_AFTER_S


async def put_region(pool: asyncpg.Pool, name: str, body: RegionIn) -> RegionView:
    async with write_transaction(pool) as tx:
        before = await regions.get(tx.conn, name)
        row = await regions.upsert(tx.conn, name, body.lat, body.lon, body.edge_url, body.capacity)
        if before is None or any(before[k] != row[k] for k in ("lat", "lon", "edge_url", "capacity")):
            tx.upsert(ChangeKind.REGION, name, row)
    return RegionView(**dict(row))


async def list_regions(pool: asyncpg.Pool) -> list[RegionView]:
    async with pool.acquire() as conn:
        region_rows = await regions.list_all(conn)
        node_rows = await edge_nodes.list_with_load(conn, NODE_LOST_AFTER_S)
    nodes_by_region: dict[str, list[NodeView]] = {}
    for n in node_rows:
        nodes_by_region.setdefault(n["region"], []).append(
            NodeView(
                id=n["id"],
                healthy=n["healthy"],
                backends=n["live"],
                capacity=n["capacity"],
                applied_version=n["applied_version"],
                address=n["address"],
                last_heartbeat_at=n["last_heartbeat_at"],
                draining=n["draining"],
            )
        )
    return [RegionView(**dict(r), nodes=nodes_by_region.get(r["name"], [])) for r in region_rows]
