"""The control plane's loop-service helper and its per-key single flight."""

from __future__ import annotations

import asyncio

import pytest

from control.loop_service import LoopService, running
from control.singleflight import SingleFlight


async def test_a_failing_turn_does_not_end_the_loop_and_stop_ends_it() -> None:
    turns: list[int] = []
    third = asyncio.Event()

    async def tick() -> None:
        turns.append(len(turns))
        if len(turns) == 3:
            third.set()
        if len(turns) == 1:
            raise RuntimeError("one bad turn")
        if len(turns) == 2:
            raise ConnectionRefusedError("database down")

    service = LoopService("test-loop", 0.001, tick, run_first=True)
    async with running(service):
        await asyncio.wait_for(third.wait(), 5)
        assert service.running
    assert not service.running
    seen = len(turns)
    await asyncio.sleep(0.01)  # would have been several more turns had stop not ended the task
    assert len(turns) == seen


async def test_without_run_first_the_first_turn_waits_one_interval() -> None:
    ran = asyncio.Event()

    async def tick() -> None:
        ran.set()

    service = LoopService("test-wait", 3600, tick)
    service.start()
    await asyncio.sleep(0)
    assert not ran.is_set()
    await service.stop()


async def test_single_flight_shares_one_run_and_only_the_leader_is_told() -> None:
    flights: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        return 42

    waiters = [asyncio.ensure_future(flights.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert runs == 1
    assert sorted(results) == [(42, False)] * 4 + [(42, True)]


async def test_single_flight_failure_reaches_every_waiter_and_the_next_call_starts_afresh() -> None:
    flights: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def failing() -> int:
        await release.wait()
        raise ValueError("no")

    waiters = [asyncio.ensure_future(flights.run("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    for outcome in await asyncio.gather(*waiters, return_exceptions=True):
        assert isinstance(outcome, ValueError)

    async def ok() -> int:
        return 1

    assert await flights.run("k", ok) == (1, True)


@pytest.mark.parametrize("cls", [OSError, TimeoutError])
async def test_transient_errors_are_a_skipped_turn(cls: type[Exception]) -> None:
    done = asyncio.Event()
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            done.set()
        raise cls("down")

    async with running(LoopService("t", 0.001, tick, run_first=True)):
        await asyncio.wait_for(done.wait(), 5)
