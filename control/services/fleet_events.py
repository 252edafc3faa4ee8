"""The dashboard's live view of the fleet: regions with their nodes, and recent backends, as events.

A `regions` event goes out whenever the regions, their nodes' health, load, applied versions or the
system version changed (checked on every new version and at least every FLEET_EVENTS_CHECK_S, since
heartbeats are observation and do not move the version); a `backends` event whenever the version
moved (every backend change does), at most every FLEET_EVENTS_MIN_INTERVAL_S. Unchanged state is
not sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from control.db import TRANSIENT_ERRORS
from control.notifier import VersionNotifier
from control.queries import system_version
from control.services import backends, regions
from control.services.auth import Caller
from sync.timing import FLEET_EVENTS_CHECK_S, FLEET_EVENTS_KEEPALIVE_S, FLEET_EVENTS_MIN_INTERVAL_S

BACKENDS_SHOWN = 500  # the most recent ones: the dashboard is a window, not an export
KEEPALIVE = b": keepalive\n\n"


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(data))


async def _version(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        version: int = (await system_version.read(conn))["version"]
    return version


async def _regions(pool: asyncpg.Pool, version: int) -> bytes:
    views = await regions.list_regions(pool)
    return sse("regions", {"version": version, "regions": [r.model_dump(mode="json") for r in views]})


async def _backends(pool: asyncpg.Pool, caller: Caller, version: int) -> bytes:
    views = await backends.list_backends(pool, caller, key=None, region=None, status=None, limit=BACKENDS_SHOWN)
    shown = [b.model_dump(mode="json", exclude={"address"} if not caller.is_admin else None) for b in views]
    return sse("backends", {"version": version, "backends": shown})


async def fleet_events(
    pool: asyncpg.Pool,
    notifier: VersionNotifier,
    caller: Caller,
    check_s: float = FLEET_EVENTS_CHECK_S,
) -> AsyncIterator[bytes]:
    """SSE frames, forever: the current state first, then each change. While the database is
    unreachable the stream stays open, says so once (`unavailable`) and resumes when it is back."""
    sent_regions = b""
    sent_version = -1
    quiet_since = time.monotonic()
    unavailable = False
    while True:
        seen = notifier.latest
        read_at = time.monotonic()
        frames = []
        try:
            version = await _version(pool)
            if version != sent_version:
                frames.append(await _backends(pool, caller, version))
            region_frame = await _regions(pool, version)
        except TRANSIENT_ERRORS:
            if not unavailable:
                unavailable = True
                sent_regions, sent_version = b"", -1  # everything again once it is back
                yield sse("unavailable", {"message": "the database is unreachable; retrying"})
            await asyncio.sleep(check_s)
            continue
        unavailable = False
        sent_version = version
        if region_frame != sent_regions:
            frames.insert(0, region_frame)
            sent_regions = region_frame
        if not frames and time.monotonic() - quiet_since >= FLEET_EVENTS_KEEPALIVE_S:
            frames.append(KEEPALIVE)
        if frames:
            quiet_since = time.monotonic()
            yield b"".join(frames)
        await notifier.wait_beyond(max(seen, version), check_s)
        # Under a burst of commits, read at most every FLEET_EVENTS_MIN_INTERVAL_S: many versions, one read.
        await asyncio.sleep(max(0.0, read_at + FLEET_EVENTS_MIN_INTERVAL_S - time.monotonic()))
