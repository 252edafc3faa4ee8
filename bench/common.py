"""Shared pieces of the benchmarks: processes on loopback, a load generator, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg

from control.notifier import CHANNEL
from meridian import processes
from meridian.dev import start_control_plane
from sync.net import free_port as free_port  # the benchmarks' import of the one helper

ADMIN_TOKEN = "bench-admin-token-0123456789"


def client_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for a benchmark's own clients when it is installed, so the load generator is not
    what limits the figure."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def machine_facts(loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> dict[str, object]:
    """What every benchmark's JSON says about where it ran."""
    return {
        "client_loop": "uvloop" if loop_factory else "asyncio",
        "cpus_shared_by_all": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(latencies_s: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies_s, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies_s, 99) * 1000, 3),
    }


def wait_http(url: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


@contextlib.contextmanager
def process(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process in its own group; stop the whole group on exit, whatever happened."""
    proc = processes.start(argv, log_path, env)
    try:
        yield proc
    finally:
        processes.stop(proc, grace_s=20)


@contextlib.contextmanager
def control_plane(data_dir: Path, port: int, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """`meridian control serve` with its embedded PostgreSQL in `data_dir`, started as `meridian dev` does."""
    proc = start_control_plane(port, data_dir, ADMIN_TOKEN, data_dir / "control.log", *extra_args)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        processes.stop(proc, grace_s=20)


async def closed_loop(
    make_request: Callable[[aiohttp.ClientSession, int], Awaitable[None]],
    *,
    total: int,
    concurrency: int,
) -> tuple[float, list[float]]:
    """Run `total` requests with `concurrency` in flight; returns (elapsed seconds, latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                await make_request(session, i)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


async def stop_groups(procs: list[asyncio.subprocess.Process], grace_s: float = 10.0) -> None:
    """SIGTERM each process's group, SIGKILL a group still there after `grace_s`."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@contextlib.asynccontextmanager
async def commit_times(db_url: str) -> AsyncIterator[dict[int, float]]:
    """When each version's commit was observed: its NOTIFY (sent by the committing transaction,
    delivered at commit) as received by a LISTEN connection of this process."""
    seen: dict[int, float] = {}
    conn = await asyncpg.connect(db_url)
    try:

        def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            seen.setdefault(int(str(payload)), time.time())

        await conn.add_listener(CHANNEL, on_notify)
        yield seen
    finally:
        await conn.close()
