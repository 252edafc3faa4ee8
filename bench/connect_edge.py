"""Connect at the edge: cache-hit latency under a fixed rate, and cold-start overhead.

    python -m bench.connect_edge [--rate 500] [--seconds 10] [--cold-keys 20]

One run: a dev cluster (embedded PostgreSQL, control plane, one edge) in a temp dir.

  cache_hit   `POST /v1/connect` at the edge for a key whose backend is ready and known to the
              edge's replica (so the edge answers alone, no control-plane round trip), open loop:
              requests are scheduled `1/rate` apart and each latency is measured from its
              SCHEDULED time, so a stall shows up as the queue behind it (no coordinated omission).
              A 1 s warm-up at the same rate first; the client's heap is frozen (gc.freeze) so its
              own GC pauses are not counted as edge latency. Target p99 <= 5 ms at 500/s.
  cold_start  for `--cold-keys` new keys, one after another: `POST /v1/connect` at the edge, then
              one `GET` of the returned URL (the edge's proxy waits for the backend to be ready
              itself): time from the connect's start to that GET's 200. Interleaved with it, the
              bare start of the same backend: `python -m meridian.demo` spawned here with a free
              PORT, polled every 5 ms until its first 200. Overhead = cold p50 - bare p50.
              Target <= 100 ms.
Prints JSON. Every process it starts is stopped on exit, failure included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import client_loop_factory, free_port, machine_facts, percentile, summary_ms
from bench.edge_cluster import AUTH, dev_cluster, edge_caught_up, ready_backend
from meridian.dev import DevCluster


def _ms(values_s: list[float], *pcts: float) -> dict[str, float]:
    return {f"p{p:g}_ms": round(percentile(values_s, p) * 1000, 3) for p in pcts}


# ---- cache-hit connects ---------------------------------------------------------------------------


async def _open_loop(
    session: aiohttp.ClientSession, edge_url: str, key: str, backend_id: str, rate: float, seconds: float
) -> dict[str, Any]:
    n = int(rate * seconds)
    interval = 1.0 / rate
    body = json.dumps({"key": key, "template": "demo"}).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    latencies: list[float] = []
    send_lag: list[float] = []
    errors: dict[str, int] = {}

    async def one(scheduled: float) -> None:
        send_lag.append(time.perf_counter() - scheduled)
        try:
            async with session.post(f"{edge_url}/v1/connect", data=body, headers=headers) as r:
                answer = await r.json()
                done = time.perf_counter()
            if r.status != 200 or answer.get("backend_id") != backend_id or answer.get("spawned"):
                errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                return
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append(done - scheduled)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(n):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    async with asyncio.timeout(60):
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "requests": n,
        "rate_per_s": rate,
        "achieved_per_s": round(len(latencies) / elapsed, 1),
        **_ms(latencies, 50, 90, 99, 99.9),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 3),
        "client_send_lag_p99_ms": round(percentile(send_lag, 99) * 1000, 3),
        "errors": errors,
    }


# ---- cold start -----------------------------------------------------------------------------------


async def _cold(session: aiohttp.ClientSession, edge_url: str, key: str) -> tuple[float, float]:
    """(connect seconds, connect + first GET seconds) for a new key."""
    t0 = time.perf_counter()
    async with session.post(f"{edge_url}/v1/connect", json={"key": key, "template": "demo"}, headers=AUTH) as r:
        answer = await r.json()
        if r.status != 200 or not answer.get("spawned"):
            raise RuntimeError(f"cold connect {key}: {r.status} {answer}")
    t1 = time.perf_counter()
    async with session.get(answer["url"], timeout=aiohttp.ClientTimeout(total=60)) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"first GET of {key}: {r.status}")
    return t1 - t0, time.perf_counter() - t0


async def _bare(log_path: Path, poll_s: float = 0.005, timeout_s: float = 30) -> float:
    """Seconds from spawning `python -m meridian.demo` to its first HTTP 200 (polled every 5 ms)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
    env |= {"PORT": str(port), "MERIDIAN_BACKEND_ID": "bk-bare", "MERIDIAN_KEY": "bare", "MERIDIAN_REGION": "bench"}
    url = f"http://127.0.0.1:{port}/"
    attempt = aiohttp.ClientTimeout(total=2)
    log = await asyncio.to_thread(open, log_path, "ab")
    try:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meridian.demo", env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as probe:
            while time.perf_counter() - t0 < timeout_s:
                if proc.returncode is not None:
                    raise RuntimeError(f"bare demo backend exited with {proc.returncode}; see {log_path}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with probe.get(url, timeout=attempt) as r:
                        if r.status == 200:
                            return time.perf_counter() - t0
                await asyncio.sleep(poll_s)
        raise RuntimeError(f"bare demo backend not answering within {timeout_s}s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


# ---- run ------------------------------------------------------------------------------------------


async def run(cluster: DevCluster, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    edge_url = cluster.edge_url(0)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await edge_caught_up(session, cluster)
        hot = await ready_backend(session, cluster, "bench-hot")
        # This client's own full GC pauses (~40 ms on this machine, every few seconds of load)
        # would otherwise be measured as edge latency: move everything live now out of its reach.
        gc.collect()
        gc.freeze()
        await _open_loop(session, edge_url, "bench-hot", hot["backend_id"], args.rate, 1.0)  # warm-up
        cache_hit = await _open_loop(session, edge_url, "bench-hot", hot["backend_id"], args.rate, args.seconds)

        # One cold start first, not counted: the first spawn pays for cold OS caches.
        await _cold(session, edge_url, "bench-cold-warmup")
        await _bare(tmp / "bare.log")
        connect_s: list[float] = []
        cold_s: list[float] = []
        bare_s: list[float] = []
        for i in range(args.cold_keys):
            c, total = await _cold(session, edge_url, f"bench-cold-{i}")
            connect_s.append(c)
            cold_s.append(total)
            bare_s.append(await _bare(tmp / "bare.log"))
            await asyncio.sleep(0.2)  # let the edge's post-start work (reports, sync) settle

    cold = {"p50_ms": round(percentile(cold_s, 50) * 1000, 1), "max_ms": round(max(cold_s) * 1000, 1)}
    bare = {"p50_ms": round(percentile(bare_s, 50) * 1000, 1), "max_ms": round(max(bare_s) * 1000, 1)}
    return {
        "cache_hit": cache_hit,
        "cold_start": {
            "keys": args.cold_keys,
            "connect_then_first_get": cold,
            "of_which_connect": summary_ms(connect_s),
            "bare_backend_start": bare,
            "overhead_p50_ms": round(cold["p50_ms"] - bare["p50_ms"], 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="cache-hit connects per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the cache-hit phase")
    parser.add_argument("--cold-keys", type=int, default=20)
    args = parser.parse_args()
    loop_factory = client_loop_factory()
    with tempfile.TemporaryDirectory(prefix="meridian-bench-connect-edge-") as tmp_text:
        tmp = Path(tmp_text)
        with dev_cluster(tmp / "dev") as cluster, asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(run(cluster, args, tmp))
    result |= {
        "bench": "connect_edge",
        "targets": {"cache_hit_p99_ms": 5.0, "cold_start_overhead_p50_ms": 100.0},
        **machine_facts(loop_factory),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
