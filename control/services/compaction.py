"""Compaction of the change log, and the background task that runs it periodically.

Two bounds say what to keep: the newest `keep_versions` versions (count bound) and every row younger
than `keep_s` seconds (age bound). A row is kept when EITHER bound wants it kept, i.e. it goes only
when it is both old and beyond the newest versions. The log must stay a contiguous suffix of
versions (a reader after the floor may miss nothing), so the new floor is the lower of:

  - `current - keep_versions`, and
  - the version just below the oldest version that still has a young row (versions commit in
    order, but a long transaction can commit an older `created_at` after a younger one, so "young"
    is decided by the first young row, not by the last old one).

Rows at or below the floor are deleted and `system_version.floor_version` is raised to it, in one
transaction. The floor never goes down. One compaction runs at a time across control planes
(a transaction-scoped advisory lock); the others skip their turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from control.loop_service import LoopService
from control.queries import changes, system_version
from control.settings import SyncSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactionResult:
    floor: int
    deleted: int
    skipped: bool = False


async def compact(pool: asyncpg.Pool, *, keep_versions: int, keep_s: float) -> CompactionResult:
    """Run one compaction now; returns the floor after it and how many rows went."""
    async with pool.acquire() as conn, conn.transaction():
        locked = await changes.try_lock_compaction(conn)
        head = await system_version.read(conn)
        if not locked:
            return CompactionResult(floor=head["floor_version"], deleted=0, skipped=True)
        by_count = head["version"] - keep_versions
        youngest_kept = await changes.oldest_version_younger_than(conn, keep_s)
        by_age = head["version"] if youngest_kept is None else youngest_kept - 1
        floor = min(by_count, by_age)
        if floor <= head["floor_version"]:
            return CompactionResult(floor=head["floor_version"], deleted=0)
        deleted = await changes.delete_through(conn, floor)
        await system_version.set_floor(conn, floor)
    if deleted:
        log.info("compaction: deleted %d change rows, floor is now version %d", deleted, floor)
    return CompactionResult(floor=floor, deleted=deleted)


def compaction_service(pool: asyncpg.Pool, settings: SyncSettings) -> LoopService:
    """Compacts every `compaction_interval_s`; a database outage only skips a turn."""
    return LoopService(
        "change-log-compaction",
        settings.compaction_interval_s,
        lambda: compact(pool, keep_versions=settings.compaction_keep_versions, keep_s=settings.compaction_keep_s),
    )
