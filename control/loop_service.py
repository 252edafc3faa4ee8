"""One helper for the control plane's periodic background work (compaction, key failover, the
version notifier's fallback poll): a named task that runs `tick()` every `every_s` seconds until
stopped. A database outage only skips a turn; any other failure is logged and the loop goes on,
so one bad turn never silently ends a background duty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from control.db import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


class LoopService:
    def __init__(
        self, name: str, every_s: float, tick: Callable[[], Awaitable[object]], *, run_first: bool = False
    ) -> None:
        """`run_first`: tick at once on start, then every `every_s`; otherwise wait `every_s` first."""
        self.name = name
        self._every_s = every_s
        self._tick = tick
        self._run_first = run_first
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        if not self._run_first:
            await asyncio.sleep(self._every_s)
        while True:
            await self._turn()
            await asyncio.sleep(self._every_s)

    async def _turn(self) -> None:
        try:
            await self._tick()
        except TRANSIENT_ERRORS as exc:
            log.warning("%s skipped a turn: database unreachable (%s)", self.name, exc)
        except Exception:
            log.exception("%s failed this turn", self.name)


@asynccontextmanager
async def running(*services: LoopService) -> AsyncIterator[None]:
    """Start `services` for the body of the `async with`, and stop every one of them after it."""
    for service in services:
        service.start()
    try:
        yield
    finally:
        for service in services:
            await service.stop()
