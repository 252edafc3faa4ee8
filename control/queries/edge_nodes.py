"""Queries on `edge_nodes`. Health is derived: a node is healthy while its last heartbeat is recent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one
from sync.state import LIVE_STATUS_VALUES

_COLUMNS = "id, region, address, capacity, applied_version, last_heartbeat_at, registered_at, draining, ordinal"
LIVE_STATUSES = LIVE_STATUS_VALUES


async def get(conn: Conn, node_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM edge_nodes WHERE id = $1", node_id)


async def upsert(
    conn: Conn,
    node_id: str,
    region: str,
    address: str,
    capacity: int,
    applied_version: int,
    shutting_down: bool = False,
    executors: Sequence[str] | None = None,
    unhealthy_reason: str | None = None,
    edge_domain: str | None = None,
    warm_pools: Mapping[str, int] | None = None,
) -> asyncpg.Record:
    """Register or refresh a node; ``executors`` None (an edge that does not say) means process only."""
    return await one(
        conn,
        f"""
        INSERT INTO edge_nodes (id, region, address, capacity, applied_version, shutting_down, executors,
                                unhealthy_reason, edge_domain, warm_pools)
        VALUES ($1, $2, $3, $4, $5, $6, coalesce($7::text[], '{{process}}'), $8, $9, $10::jsonb)
        ON CONFLICT (id) DO UPDATE SET region = EXCLUDED.region, address = EXCLUDED.address,
            capacity = EXCLUDED.capacity, applied_version = EXCLUDED.applied_version,
            shutting_down = EXCLUDED.shutting_down, executors = EXCLUDED.executors,
            unhealthy_reason = EXCLUDED.unhealthy_reason, edge_domain = EXCLUDED.edge_domain,
            warm_pools = EXCLUDED.warm_pools, last_heartbeat_at = now()
        RETURNING {_COLUMNS}
        """,
        node_id,
        region,
        address,
        capacity,
        applied_version,
        shutting_down,
        list(executors) if executors is not None else None,
        unhealthy_reason,
        edge_domain,
        dict(warm_pools or {}),
    )


async def list_with_load(conn: Conn, lost_after_s: float) -> list[asyncpg.Record]:
    """Every node with its live-backend count and health."""
    return await conn.fetch(
        """
        SELECT id, region, address, capacity, applied_version, last_heartbeat_at,
               draining OR shutting_down AS draining,
               last_heartbeat_at > now() - make_interval(secs => $1) AND unhealthy_reason IS NULL AS healthy,
               live_backends AS live
        FROM edge_nodes ORDER BY region, id
        """,
        lost_after_s,
    )


async def least_loaded_in_region(
    conn: Conn, region: str, lost_after_s: float, executor: str = "process", template_id: str = ""
) -> asyncpg.Record | None:
    """The healthy, not draining (nor shutting down) node of `region` running `executor` with free
    capacity and the lowest fill ratio; between equally filled nodes, one that reported a ready
    warm-pool member of `template_id` (it starts the backend fast), then the id.

    Not locked here: the live-count trigger locks the node row when the backend is inserted, and
    holding it any longer would serialise every connect to the node for the whole transaction.
    Connects committing at the same instant may therefore overshoot a node's capacity by a few."""
    return await conn.fetchrow(
        """
        SELECT id, capacity, live_backends AS live, edge_domain FROM edge_nodes
        WHERE region = $1 AND last_heartbeat_at > now() - make_interval(secs => $2)
          AND live_backends < capacity AND NOT draining AND NOT shutting_down AND $3 = ANY (executors)
          AND unhealthy_reason IS NULL
        ORDER BY live_backends::float / greatest(capacity, 1), coalesce((warm_pools ->> $4)::int, 0) > 0 DESC, id
        LIMIT 1
        """,
        region,
        lost_after_s,
        executor,
        template_id,
    )


async def healthy_and_running(conn: Conn, region: str, lost_after_s: float, executor: str) -> tuple[int, int]:
    """How many healthy, not draining nodes `region` has, and how many of them run `executor`."""
    row = await one(
        conn,
        """
        SELECT count(*) AS healthy, count(*) FILTER (WHERE $3 = ANY (executors)) AS running
        FROM edge_nodes WHERE region = $1 AND NOT draining AND NOT shutting_down
            AND last_heartbeat_at > now() - make_interval(secs => $2)
        """,
        region,
        lost_after_s,
        executor,
    )
    return int(row["healthy"]), int(row["running"])


async def set_draining(conn: Conn, node_id: str, draining: bool) -> asyncpg.Record | None:
    """Start or end a node's drain; a repeated drain keeps the time it was first asked for."""
    return await conn.fetchrow(
        f"""
        UPDATE edge_nodes SET draining = $2,
            drain_requested_at = CASE WHEN $2 THEN coalesce(drain_requested_at, now()) END
        WHERE id = $1
        RETURNING {_COLUMNS}, drain_requested_at
        """,
        node_id,
        draining,
    )


async def drain_status(conn: Conn, node_id: str) -> asyncpg.Record | None:
    """The node's drain state with the backends it still runs: live ones and those still stopping."""
    return await conn.fetchrow(
        f"""
        SELECT {_COLUMNS}, drain_requested_at, live_backends AS live,
               (SELECT count(*) FROM backends b WHERE b.node_id = n.id AND b.status = 'draining') AS stopping
        FROM edge_nodes n WHERE id = $1
        """,
        node_id,
    )


def snapshot(conn: Conn) -> CursorFactory:
    """Every node's replicated fields (liveness columns are not replicated), for the sync snapshot."""
    return conn.cursor("SELECT id, region, address, capacity, ordinal FROM edge_nodes")
