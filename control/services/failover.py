"""Key failover: backends of an edge node silent longer than KEY_FAILOVER_AFTER_S are declared
lost, so their keys can be served from another region (the fencing token guards storage)."""

from __future__ import annotations

import logging

import asyncpg

from control.loop_service import LoopService
from control.queries import backends
from control.versioning import write_transaction
from sync.models import ChangeKind
from sync.timing import KEY_FAILOVER_AFTER_S, NODE_LOST_AFTER_S

log = logging.getLogger(__name__)


async def fail_over_silent_nodes(pool: asyncpg.Pool, silent_for_s: float = KEY_FAILOVER_AFTER_S) -> int:
    async with write_transaction(pool) as tx:
        rows = await backends.mark_lost_on_silent_nodes(tx.conn, silent_for_s)
        for row in rows:
            tx.upsert(ChangeKind.BACKEND, row["id"], row)
    if rows:
        log.warning("declared %d backend(s) lost on nodes silent for %.0fs", len(rows), silent_for_s)
    return len(rows)


def failover_service(pool: asyncpg.Pool, every_s: float = NODE_LOST_AFTER_S) -> LoopService:
    return LoopService("key-failover", every_s, lambda: fail_over_silent_nodes(pool))
