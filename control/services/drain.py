"""Node drain: a draining node gets no new backends (placement and node choice skip it), its edge
stops the backends that go idle, and the drain status says when the node is empty.

Draining is operational state, not replicated state: it moves no system version. The edge learns
it from its next heartbeat's answer."""

from __future__ import annotations

import asyncpg

from control.queries import edge_nodes
from sync.errors import NotFound
from sync.models import NodeDrainView


async def set_draining(pool: asyncpg.Pool, node_id: str, draining: bool) -> NodeDrainView:
    async with pool.acquire() as conn, conn.transaction():
        if await edge_nodes.set_draining(conn, node_id, draining) is None:
            raise NotFound(f"no edge node {node_id!r}", fields={"node_id": node_id})
        row = await edge_nodes.drain_status(conn, node_id)
    assert row is not None
    return _view(row)


async def drain_status(pool: asyncpg.Pool, node_id: str) -> NodeDrainView:
    async with pool.acquire() as conn:
        row = await edge_nodes.drain_status(conn, node_id)
    if row is None:
        raise NotFound(f"no edge node {node_id!r}", fields={"node_id": node_id})
    return _view(row)


def _view(row: asyncpg.Record) -> NodeDrainView:
    return NodeDrainView(
        id=row["id"],
        region=row["region"],
        draining=row["draining"],
        drain_requested_at=row["drain_requested_at"],
        backends=row["live"],
        stopping=row["stopping"],
        empty=row["live"] == 0 and row["stopping"] == 0,
    )
