"""What the sync endpoints share for the life of the app: the change feed, snapshot admission, and
the periodic compaction task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from control.loop_service import running
from control.notifier import VersionNotifier
from control.services import compaction
from control.services.snapshot import SnapshotAdmission
from control.services.sync import ChangeFeed
from control.settings import SyncSettings


@dataclass
class SyncRuntime:
    settings: SyncSettings
    feed: ChangeFeed
    snapshots: SnapshotAdmission


@asynccontextmanager
async def sync_runtime(
    settings: SyncSettings, pool: asyncpg.Pool, notifier: VersionNotifier
) -> AsyncIterator[SyncRuntime]:
    runtime = SyncRuntime(
        settings=settings,
        feed=ChangeFeed(pool, notifier, settings.changes_page_limit),
        snapshots=SnapshotAdmission(settings.max_concurrent_snapshots),
    )
    try:
        async with running(compaction.compaction_service(pool, settings)):
            yield runtime
    finally:
        runtime.feed.close()
