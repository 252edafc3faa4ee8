"""Time to first byte of a new key's backend, ComputeSDK-style: cold and from a warm pool.

    python -m bench.cold_start [--runs 100] [--stagger-ms 200] [--pool 100] [--capacity 260]

One run: a dev cluster (embedded PostgreSQL, control plane, one edge with `--capacity`) in a temp
dir. One measurement = `POST /v1/connect` at the edge for a new key, then `GET` of the returned
URL until its first 200 (the edge's proxy waits for the backend itself): from the connect's start
to that 200. `--runs` of them in each mode:

  sequential  one after another;
  staggered   one started every `--stagger-ms`, whatever the others do;
  burst       all at once.

For the `demo` template started cold, then for `demo-pooled` (the same backend, `warm_pool:
--pool`, `claim_path: /_meridian/claim`; the pool is full before each mode). Interleaved with
the cold sequential runs: the bare start of the same backend, `python -m meridian.demo` spawned
here, polled every 5 ms until its first 200. After each mode its backends are terminated (hard)
before the next begins.

Each mode reports p50/p95/p99/max, the success rate (a 200 within 60 s), the connect answer's
share, and where the edge's time went, from its `/metrics` before and after the mode (mean per
backend): `assign` (the connect's transaction → the edge saw the assignment), `claim` (the claim
call), `ready` (assignment → ready), `proxy_wait` (a proxied request waiting for its backend).
The load average is read at the start and the end: the machine is shared. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import client_loop_factory, machine_facts, percentile
from bench.connect_edge import _bare
from bench.edge_cluster import AUTH, dev_cluster, edge_caught_up
from meridian.dev import DevCluster
from tests.helpers import DEMO_TEMPLATE

POOLED = "demo-pooled"
RUN_TIMEOUT_S = 60.0
_METRIC = re.compile(
    r"^(meridian_backend_start_step_duration_seconds|meridian_proxy_ready_wait_duration_seconds)"
    r"_(sum|count)(\{[^}]*\})? ([0-9.e+-]+)$"
)


def _stats(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {}
    out = {f"p{p}_ms": round(percentile(values_s, p) * 1000, 1) for p in (50, 95, 99)}
    return out | {"max_ms": round(max(values_s) * 1000, 1)}


async def one_start(
    session: aiohttp.ClientSession, edge_url: str, key: str, template: str, ids: list[str] | None = None
) -> tuple[float, float]:
    """(connect answered, first proxied 200) in seconds from the connect's start; raises on failure.
    The backend's id goes to `ids` (to be terminated after the mode)."""
    t0 = time.perf_counter()
    async with session.post(f"{edge_url}/v1/connect", json={"key": key, "template": template}, headers=AUTH) as r:
        answer = await r.json()
        if r.status != 200 or not answer.get("spawned"):
            raise RuntimeError(f"connect {key}: {r.status} {answer}")
    t1 = time.perf_counter()
    if ids is not None:
        ids.append(answer["backend_id"])
    async with session.get(answer["url"], timeout=aiohttp.ClientTimeout(total=RUN_TIMEOUT_S)) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"first GET of {key}: {r.status}")
    return t1 - t0, time.perf_counter() - t0


async def _scrape(session: aiohttp.ClientSession, edge_url: str) -> dict[str, float]:
    async with session.get(f"{edge_url}/metrics", headers=AUTH) as r:
        text = await r.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        name = "proxy_wait" if m.group(1).startswith("meridian_proxy") else "step"
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if name == "step":
            name = labels.get("step", "?")
            name += "".join(f".{k}={labels[k]}" for k in ("outcome", "pooled") if k in labels)
        found[f"{name}|{m.group(2)}"] = found.get(f"{name}|{m.group(2)}", 0.0) + float(m.group(4))
    return found


def _steps(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """Mean milliseconds and count per step, over what happened between the two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for key in after:
        name, kind = key.split("|")
        if kind != "count":
            continue
        n = after[key] - before.get(key, 0.0)
        total = after[f"{name}|sum"] - before.get(f"{name}|sum", 0.0)
        if n > 0:
            out[name] = {"mean_ms": round(total / n * 1000, 2), "count": int(n)}
    return out


async def _terminate_all(session: aiohttp.ClientSession, cluster: DevCluster, ids: list[str]) -> None:
    async def stop(backend_id: str) -> None:
        url = f"{cluster.control_url}/v1/backends/{backend_id}/terminate"
        async with session.post(url, json={"hard": True}, headers=AUTH) as r:
            await r.read()

    await asyncio.gather(*(stop(i) for i in ids), return_exceptions=True)
    await _until(session, cluster, lambda s: s["backends_running"] == 0, "its backends to stop")


async def _until(
    session: aiohttp.ClientSession, cluster: DevCluster, ok: Callable[[dict[str, Any]], bool], what: str
) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        async with session.get(f"{cluster.edge_url(0)}/v1/edge/status") as r:
            if ok(await r.json()):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"edge did not get {what} in 300 s")


async def _mode(
    session: aiohttp.ClientSession,
    cluster: DevCluster,
    template: str,
    mode: str,
    args: argparse.Namespace,
    between: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    edge_url = cluster.edge_url(0)
    prefix = f"{template}-{mode}-{time.monotonic_ns()}"
    connects: list[float] = []
    totals: list[float] = []
    errors: dict[str, int] = {}
    examples: list[str] = []  # what the first failures said
    ids: list[str] = []

    async def run(i: int) -> None:
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                c, total = await one_start(session, edge_url, f"{prefix}-{i}", template, ids)
            connects.append(c)
            totals.append(total)
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if len(examples) < 3:
                examples.append(f"{type(exc).__name__}: {exc}"[:300])

    before = await _scrape(session, edge_url)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    if mode == "sequential":
        for i in range(args.runs):
            await run(i)
            if between is not None:
                await between()
    elif mode == "staggered":
        tasks = []
        for i in range(args.runs):
            delay = t0 + i * args.stagger_ms / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(run(i)))
        await asyncio.gather(*tasks)
    else:
        await asyncio.gather(*(run(i) for i in range(args.runs)))
    elapsed = time.perf_counter() - t0
    after = await _scrape(session, edge_url)
    await _terminate_all(session, cluster, ids)
    return {
        "runs": args.runs,
        "success_rate": round(len(totals) / args.runs, 4),
        "connect_to_first_200": _stats(totals),
        "of_which_connect_answer": _stats(connects),
        "edge_steps": _steps(before, after),
        "errors": errors,
        "error_examples": examples,
        "elapsed_s": round(elapsed, 2),
        "load_avg_1m_before": round(load_before[0], 2),
    }


async def _pool_full(session: aiohttp.ClientSession, cluster: DevCluster, template_id: str, n: int) -> float:
    t0 = time.perf_counter()
    await _until(session, cluster, lambda s: s.get("warm_pools", {}).get(template_id, 0) >= n, f"a full pool of {n}")
    return time.perf_counter() - t0


async def run(cluster: DevCluster, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    edge_url = cluster.edge_url(0)
    result: dict[str, Any] = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    bare_s: list[float] = []

    async def bare() -> None:
        bare_s.append(await _bare(tmp / "bare.log"))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await edge_caught_up(session, cluster)
        await one_start(session, edge_url, "warm-up-os-caches", "demo")  # not counted
        await bare()
        bare_s.clear()
        modes = [m for m in ("sequential", "staggered", "burst") if m in args.modes]
        cold: dict[str, Any] = {}
        for mode in modes:
            cold[mode] = await _mode(session, cluster, "demo", mode, args, bare if mode == "sequential" else None)
        result["cold"] = cold
        if bare_s:
            result["bare_process_start"] = {"runs": len(bare_s), **_stats(bare_s)}
            seq = cold.get("sequential", {}).get("connect_to_first_200", {})
            if seq:
                result["cold_overhead_p50_ms"] = round(seq["p50_ms"] - result["bare_process_start"]["p50_ms"], 1)

        spec = {**DEMO_TEMPLATE, "warm_pool": args.pool, "claim_path": "/_meridian/claim"}
        async with session.put(f"{cluster.control_url}/v1/templates/{POOLED}", json=spec, headers=AUTH) as r:
            template_id = (await r.json())["id"]
        await edge_caught_up(session, cluster)
        pooled: dict[str, Any] = {}
        for mode in modes:
            fill_s = await _pool_full(session, cluster, template_id, args.pool)
            pooled[mode] = {"pool": args.pool, "pool_fill_s": round(fill_s, 1)}
            pooled[mode] |= await _mode(session, cluster, POOLED, mode, args)
        result["pooled"] = pooled
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--stagger-ms", type=float, default=200.0)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--capacity", type=int, default=260, help="the edge's --capacity (pool + a burst)")
    parser.add_argument("--modes", default="sequential,staggered,burst")
    args = parser.parse_args()
    loop_factory = client_loop_factory()
    with tempfile.TemporaryDirectory(prefix="meridian-bench-cold-start-") as tmp_text:
        tmp = Path(tmp_text)
        edge_args = ("--capacity", str(args.capacity))
        with dev_cluster(tmp / "dev", edge_args=edge_args) as cluster, asyncio.Runner(loop_factory=loop_factory) as r:
            result = r.run(run(cluster, args, tmp))
    result = {
        "bench": "cold_start",
        "command": " ".join(["python -m bench.cold_start", *sys.argv[1:]]),
        **result,
        "targets": {
            "pooled_sequential_p50_ms": 20.0,
            "pooled_sequential_p99_ms": 50.0,
            "pooled_burst_p99_ms": 200.0,
            "pooled_burst_success_rate": 1.0,
        },
        **machine_facts(loop_factory),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
