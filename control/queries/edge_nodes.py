"""Queries on `edge_nodes`. Health is derived: a node is healthy while its last heartbeat is recent."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

_COLUMNS = "id, region, address, capacity, applied_version, last_heartbeat_at, registered_at"
LIVE_STATUSES = ("scheduled", "starting", "ready")


async def get(conn: asyncpg.Connection, node_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM edge_nodes WHERE id = $1", node_id)


async def upsert(
    conn: asyncpg.Connection, node_id: str, region: str, address: str, capacity: int, applied_version: int
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""
        INSERT INTO edge_nodes (id, region, address, capacity, applied_version)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (id) DO UPDATE SET region = EXCLUDED.region, address = EXCLUDED.address,
            capacity = EXCLUDED.capacity, applied_version = EXCLUDED.applied_version,
            last_heartbeat_at = now()
        RETURNING {_COLUMNS}
        """,
        node_id,
        region,
        address,
        capacity,
        applied_version,
    )


async def touch(conn: asyncpg.Connection, node_id: str, applied_version: int) -> None:
    await conn.execute(
        "UPDATE edge_nodes SET last_heartbeat_at = now(), applied_version = $2 WHERE id = $1",
        node_id,
        applied_version,
    )


async def list_with_load(conn: asyncpg.Connection, lost_after_s: float) -> list[asyncpg.Record]:
    """Every node with its live-backend count and health."""
    return await conn.fetch(
        """
        SELECT n.id, n.region, n.address, n.capacity, n.applied_version, n.last_heartbeat_at,
               n.last_heartbeat_at > now() - make_interval(secs => $1) AS healthy,
               (SELECT count(*) FROM backends b
                 WHERE b.node_id = n.id AND b.status = ANY($2::text[])) AS live
        FROM edge_nodes n ORDER BY n.region, n.id
        """,
        lost_after_s,
        list(LIVE_STATUSES),
    )


async def least_loaded_in_region(conn: asyncpg.Connection, region: str, lost_after_s: float) -> asyncpg.Record | None:
    """The healthy node of `region` with free capacity and the lowest fill ratio."""
    return await conn.fetchrow(
        """
        SELECT n.id, n.capacity, count(b.id) AS live
        FROM edge_nodes n
        LEFT JOIN backends b ON b.node_id = n.id AND b.status = ANY($3::text[])
        WHERE n.region = $1 AND n.last_heartbeat_at > now() - make_interval(secs => $2)
        GROUP BY n.id, n.capacity
        HAVING count(b.id) < n.capacity
        ORDER BY count(b.id)::float / greatest(n.capacity, 1), n.id
        LIMIT 1
        """,
        region,
        lost_after_s,
        list(LIVE_STATUSES),
    )


def snapshot(conn: asyncpg.Connection) -> CursorFactory:
    """Every node's replicated fields (liveness columns are not replicated), for the sync snapshot."""
    return conn.cursor("SELECT id, region, address, capacity FROM edge_nodes")
