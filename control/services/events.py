"""The status history of one backend as a stream: history first, then live changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from control.notifier import VersionNotifier
from control.queries import backend_status_history
from sync.models import BackendStatus

KEEPALIVE_S = 15.0


async def status_events(
    pool: asyncpg.Pool, notifier: VersionNotifier, backend_id: str, after: int
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Yield (seq, event) from `after` on; ends after the terminated event."""
    while True:
        seen_version = notifier.latest
        async with pool.acquire() as conn:
            rows = await backend_status_history.after(conn, backend_id, after)
        for row in rows:
            after = row["seq"]
            yield (
                after,
                {
                    "backend_id": backend_id,
                    "status": row["status"],
                    "reason": row["reason"],
                    "at": row["at"].isoformat(),
                },
            )
            if row["status"] == BackendStatus.TERMINATED:
                return
        await notifier.wait_beyond(seen_version, KEEPALIVE_S)
