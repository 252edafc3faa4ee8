"""Key failover: backends of an edge node silent longer than KEY_FAILOVER_AFTER_S are declared
lost, so their keys can be served from another region (the fencing token guards storage)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from control.db import TRANSIENT_ERRORS
from control.queries import backends
from control.versioning import write_transaction
from sync.state import BackendState, from_row
from sync.timing import KEY_FAILOVER_AFTER_S, NODE_LOST_AFTER_S

log = logging.getLogger(__name__)


async def fail_over_silent_nodes(pool: asyncpg.Pool, silent_for_s: float = KEY_FAILOVER_AFTER_S) -> int:
    async with write_transaction(pool) as tx:
        rows = await backends.mark_lost_on_silent_nodes(tx.conn, silent_for_s)
        for row in rows:
            tx.put(from_row(BackendState, row))
    if rows:
        log.warning("declared %d backend(s) lost on nodes silent for %.0fs", len(rows), silent_for_s)
    return len(rows)


@asynccontextmanager
async def failover_task(pool: asyncpg.Pool, every_s: float = NODE_LOST_AFTER_S) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await fail_over_silent_nodes(pool)
            except TRANSIENT_ERRORS as exc:
                log.warning("key failover skipped: database unreachable (%s)", exc)

    task = asyncio.create_task(run(), name="key-failover")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
