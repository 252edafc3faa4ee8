"""Per-key single flight: concurrent calls for one key in this process share one run of the work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """`run(key, work)` starts `work()` unless a run for `key` is in flight, in which case it waits for
    that one. The leader gets `(result, True)`, every follower `(result, False)`. A failure reaches
    every waiter; the next call after it starts afresh. A cancelled waiter does not cancel the work."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight), False
        flight = self._flights[key] = asyncio.ensure_future(work())
        try:
            return await asyncio.shield(flight), True
        finally:
            self._flights.pop(key, None)
