"""Wakes waiters when the system version moves: LISTEN/NOTIFY on one dedicated connection,
with a fallback poll so a lost notification or a dropped listener costs at most one poll interval.

Every waiter of one version awaits the same future, resolved once when the version moves: waking
10,000 long-polls is one `set_result`, not 10,000 hand-offs of a lock."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from control.db import TRANSIENT_ERRORS
from control.loop_service import LoopService
from control.queries import system_version
from sync.timing import SYNC_FALLBACK_POLL_S

CHANNEL = "meridian_version"


class VersionNotifier:
    def __init__(self, url: str, pool: asyncpg.Pool, poll_interval_s: float = SYNC_FALLBACK_POLL_S) -> None:
        self._url = url
        self._pool = pool
        self._latest = 0
        self._moved: asyncio.Future[None] | None = None  # resolved when `_latest` next moves
        self._poller = LoopService("version-notifier", poll_interval_s, self._poll, run_first=True)
        self._conn: asyncpg.Connection | None = None

    @property
    def latest(self) -> int:
        return self._latest

    async def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
        await self._close_listener()

    async def publish(self, version: int) -> None:
        """Record a version known to be committed (by this process or a notification)."""
        if version > self._latest:
            self._latest = version
            moved, self._moved = self._moved, None
            if moved is not None and not moved.done():
                moved.set_result(None)

    async def wait_beyond(self, version: int, timeout_s: float) -> int:
        """Wait until the known version exceeds `version` or the timeout passes; return the known version."""
        if self._latest > version:
            return self._latest
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(loop.time() + timeout_s):
                while self._latest <= version:
                    if self._moved is None:
                        self._moved = loop.create_future()
                    # shield: a waiter that times out or goes away must not cancel the shared future.
                    await asyncio.shield(self._moved)
        return self._latest

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            asyncio.get_running_loop().create_task(self.publish(int(str(payload))))

    async def _close_listener(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=1)
            self._conn = None

    async def _poll(self) -> None:
        """One turn: (re)open the listener if needed, then read the version in case a notification was lost."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._url, timeout=5)
                await self._conn.add_listener(CHANNEL, self._on_notify)
            async with self._pool.acquire() as conn:
                await self.publish((await system_version.read(conn))["version"])
        except TRANSIENT_ERRORS:
            await self._close_listener()
            raise
