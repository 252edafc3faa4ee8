"""Token look-ups are shared: many requests with one uncached token make one database read."""

from __future__ import annotations

import asyncio

from control.services.auth import Caller, TokenCache
from sync.models import Scope

EDGE = Caller(token_id="tk-1", scopes=frozenset({Scope.EDGE}))


async def test_concurrent_lookups_of_one_token_share_one_read() -> None:
    cache = TokenCache()
    reads = 0
    release = asyncio.Event()

    async def read() -> Caller | None:
        nonlocal reads
        reads += 1
        await release.wait()
        return EDGE

    lookups = [asyncio.create_task(cache.lookup(b"digest", read)) for _ in range(100)]
    await asyncio.sleep(0)  # every lookup has started and found the cache empty
    release.set()
    assert await asyncio.gather(*lookups) == [EDGE] * 100
    assert reads == 1
    assert await cache.lookup(b"digest", read) == EDGE and reads == 1, "then cached"


async def test_a_failed_shared_read_is_retried_by_each_caller() -> None:
    cache = TokenCache()
    attempts = 0
    release = asyncio.Event()

    async def read() -> Caller | None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await release.wait()
            raise ConnectionError("the database went away")
        return EDGE

    lookups = [asyncio.create_task(cache.lookup(b"digest", read)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*lookups) == [EDGE] * 10
