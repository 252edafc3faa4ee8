"""Proxy overhead: a backend direct, through the Meridian edge, and through nginx.

    python -m bench.proxy [--backends fast,demo] [--connections 32] [--duration 5] [--rounds 3]

One run: a dev cluster (embedded PostgreSQL, control plane, one edge) in a temp dir; per backend
kind one Meridian backend connected through the edge's `/v1/connect`, its direct address read from
the control plane, and nginx (`proxy_pass`, upstream keepalive 64, HTTP/1.1, one worker) started
in front of the same backend. Backends: `fast` is nginx answering `return 200` (bench/
fast_backend.py, one worker): faster than either proxy, so the proxies are what is measured (the
direct figures show it); `demo` is Meridian's demo backend (aiohttp), slower than both.

  http        `GET /` with wrk, the same threads/connections/duration for each target, after a
              warm-up run of each: requests/s and p50/p99 at `--connections` (throughput; the
              latencies are then mostly queueing), and with ONE connection (unloaded per-request
              latency: there "added p50" is the proxy hop itself). The targets take turns,
              `--rounds` times over, so machine noise hits them alike; figures are medians over
              the rounds, and edge/nginx is the median of each round's ratio. Targets: edge >= 50%
              of nginx's requests/s, edge adds <= 1 ms p50.
  websocket   one aiohttp client, `--ws-round-trips` sequential echo round trips on `/ws` per
              path, direct and through the edge taking turns in blocks of 100, after a warm-up:
              p50/p99 and the edge's added p50.

A/B against another edge (for a quiet machine: is the current fast path faster than a previous
commit's?): `--baseline-commit REV` (or `--baseline-cmd CMD`, bench/baseline_edge.py) starts a
dev cluster of that commit next to this one, with a backend of the same kind behind its edge; that
edge joins the interleaved rounds as `baseline_edge`, and `edge_over_baseline_per_s` is the median
of each round's ratio (> 1: the current edge serves more).

`--profile FILE` records the edge process with py-spy (raw collapsed stacks, 100 Hz, busy samples
only) during its first loaded wrk run and adds a summary to the JSON. Everything shares the
machine's cores (client, proxies, backend); nothing is pinned. Prints JSON; every process it
starts is stopped on exit, failure included.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import wrk
from bench.baseline_edge import BaselineCluster, baseline_cluster
from bench.common import machine_facts, summary_ms
from bench.edge_cluster import AUTH, dev_cluster, edge_pid, ready_backend
from bench.nginx import nginx_proxy

VENV_BIN = Path(sys.executable).parent


FAST_TEMPLATE = {
    "executor": "process",
    "argv": [sys.executable, str(Path(__file__).resolve().parent / "fast_backend.py")],
    "idle_timeout_s": 3600,
}


async def _backend(cluster: Any, kind: str) -> tuple[str, str]:
    """(the backend's URL through the edge, its direct URL)."""
    async with aiohttp.ClientSession() as session:
        if kind == "fast":
            url = f"{cluster.control_url}/v1/templates/fast"
            async with session.put(url, json=FAST_TEMPLATE, headers=AUTH) as r:
                assert r.status == 200, await r.text()
        answer = await ready_backend(session, cluster, f"bench-proxy-{kind}", template=kind)
        async with session.get(answer["url"]) as r:  # the edge serves it
            assert r.status == 200, r.status
        return answer["url"], f"http://{answer['address']}/"


async def _baseline_backend(baseline: BaselineCluster, kind: str) -> str:
    """A backend of the same kind behind the baseline cluster's edge: its URL through that edge."""
    template = FAST_TEMPLATE if kind == "fast" else None
    async with aiohttp.ClientSession() as session:
        if template is not None:
            async with session.put(f"{baseline.control_url}/v1/templates/{kind}", json=template, headers=AUTH) as r:
                assert r.status == 200, await r.text()
        body = {"key": f"bench-proxy-baseline-{kind}", "template": kind}
        async with session.post(f"{baseline.control_url}/v1/connect", json=body, headers=AUTH) as r:
            answer = await r.json()
            assert r.status == 200, answer
        deadline = time.monotonic() + 60
        last = ""
        while time.monotonic() < deadline:  # until the edge's replica knows the backend and it is ready
            async with session.get(answer["url"]) as r:
                if r.status == 200:
                    return str(answer["url"])
                last = f"{r.status} {(await r.text())[:200]}"
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the baseline's {kind} backend never answered 200 ({last}):\n{baseline.log_tail()}")


async def _ws_compare(urls: dict[str, str], n: int, warmup: int, block: int = 100) -> dict[str, list[float]]:
    """`n` sequential echo round trips per URL, one aiohttp client, one WebSocket per URL open at
    once; the URLs take turns in blocks of `block` round trips so machine noise hits them alike."""
    payload = "x" * 64
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    gc.collect()
    gc.freeze()  # this client's full GC pauses are not the proxies' latency
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        sockets = {
            name: await stack.enter_async_context(session.ws_connect(url, autoping=False)) for name, url in urls.items()
        }

        async def trip(name: str) -> float:
            ws = sockets[name]
            t0 = time.perf_counter()
            await ws.send_str(payload)
            msg = await ws.receive(timeout=10)
            elapsed = time.perf_counter() - t0
            if msg.type is not aiohttp.WSMsgType.TEXT or msg.data != payload:
                raise RuntimeError(f"websocket echo via {name} answered {msg.type} {msg.data!r:.80}")
            return elapsed

        for name in urls:
            for _ in range(warmup):
                await trip(name)
        while any(len(v) < n for v in latencies.values()):
            for name, values in latencies.items():
                for _ in range(min(block, n - len(values))):
                    values.append(await trip(name))
    return latencies


async def _fast_path_share(edge_url: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(f"{edge_url}/v1/edge/status") as r:
        share = (await r.json()).get("fast_path_share")
        return float(share) if share is not None else None


def _ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "ws"


def _profile_summary(raw: Path, top: int = 12) -> dict[str, Any]:
    """Where the edge's busy samples went, from py-spy's raw output ("frame;...;leaf count" per
    line): the hottest leaf frames (self time), the hottest Meridian frames (edge/, sync/, time
    anywhere below them), and the share spent in socket writes (aiohttp's transport writes)."""
    leaf: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    samples = writes = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        leaf[frames[-1]] += count
        for frame in {f for f in frames if "(edge/" in f or "(sync/" in f}:
            ours[frame] += count
        writes += count if any(f.startswith("StreamWriter._write") for f in frames) else 0

    def shares(counter: collections.Counter[str]) -> list[str]:
        return [f"{100 * c / samples:4.1f}% {f}" for f, c in counter.most_common(top)]

    return {
        "busy_samples": samples,
        "socket_writes_pct": round(100 * writes / max(samples, 1), 1),
        "self": shares(leaf),
        "meridian_total": shares(ours),
    }


def _spy(profile: tuple[int, Path] | None, seconds: float) -> subprocess.Popen[bytes] | None:
    if profile is None:
        return None
    pid, out = profile
    argv = [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-d", str(max(1, int(seconds) - 1)),
            "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def _rounds(
    targets: dict[str, str],
    rounds: int,
    connections: int,
    duration: float,
    threads: int,
    profile: tuple[int, Path] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """wrk against each target in turn, `rounds` times over (interleaved: noise hits all alike)."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for r in range(rounds):
        for name, url in targets.items():
            spy = _spy(profile, duration) if name == "edge" and r == 0 else None
            try:
                runs[name].append(wrk.run(url, threads=threads, connections=connections, duration_s=duration))
            finally:
                _wait_spy(spy)
    return runs


def _median_of(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per target: the median over rounds of requests/s and of each percentile, plus every round's
    requests/s; and the edge/nginx requests/s ratio of each round (runs next to each other)."""
    out: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        out[name] = {
            key: round(statistics.median(r[key] for r in results), 3) for key in ("per_s", "p50_ms", "p90_ms", "p99_ms")
        }
        out[name] |= {
            "per_s_each_round": [r["per_s"] for r in results],
            "requests": sum(int(r["requests"]) for r in results),
            "errors": sum(int(r["errors"]) for r in results),
        }
    return out


def _measure(
    targets: dict[str, str], args: argparse.Namespace, profile: tuple[int, Path] | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[float]]]:
    for url in targets.values():  # warm-up: connections, caches, the edge's first-request paths
        wrk.run(url, threads=args.threads, connections=args.connections, duration_s=args.warmup)
    loaded = _rounds(targets, args.rounds, args.connections, args.duration, args.threads, profile)
    single = _rounds(targets, args.rounds, 1, args.single_duration, 1)
    ratios: dict[str, list[float]] = {o: _ratios(loaded, o) for o in ("nginx", "baseline_edge") if o in targets}
    return _median_of(loaded), _median_of(single), ratios


def _ratios(loaded: dict[str, list[dict[str, float]]], other: str) -> list[float]:
    """The edge's requests/s over `other`'s, round by round (the two ran next to each other)."""
    return [round(e["per_s"] / o["per_s"], 3) for e, o in zip(loaded["edge"], loaded[other], strict=True)]


def _added(results: dict[str, Any], key: str) -> dict[str, float]:
    proxies = [n for n in ("edge", "nginx", "baseline_edge") if n in results]
    return {n: round(results[n][key] - results["direct"][key], 3) for n in proxies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="fast,demo", help="comma-separated: fast (nginx return 200), demo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measured wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the three targets")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of each target's warm-up wrk run")
    parser.add_argument("--single-duration", type=float, default=3.0, help="seconds of each one-connection run")
    parser.add_argument("--ws-round-trips", type=int, default=2000)
    parser.add_argument("--ws-warmup", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="py-spy raw output for the edge under load")
    parser.add_argument("--baseline-commit", help="A/B: also measure the edge of this commit (git rev)")
    parser.add_argument("--baseline-cmd", help="A/B: the cluster this command starts (bench/baseline_edge.py)")
    args = parser.parse_args()
    ab = args.baseline_commit is not None or args.baseline_cmd is not None

    kinds = [k for k in args.backends.split(",") if k]
    per_backend: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meridian-bench-proxy-") as tmp_text:
        tmp = Path(tmp_text)
        with dev_cluster(tmp / "dev") as cluster, contextlib.ExitStack() as stack:
            baseline = None
            if ab:
                commit, command = args.baseline_commit, args.baseline_cmd
                baseline = stack.enter_context(baseline_cluster(tmp, commit=commit, command=command))
            for kind in kinds:
                edge_url, direct_url = asyncio.run(_backend(cluster, kind))
                upstream = direct_url.removeprefix("http://").rstrip("/")
                with nginx_proxy(upstream, tmp / f"nginx-{kind}") as (nginx_url, _):
                    targets = {"direct": direct_url, "edge": edge_url, "nginx": nginx_url + "/"}
                    if baseline is not None:
                        targets["baseline_edge"] = asyncio.run(_baseline_backend(baseline, kind))
                    first = kind == kinds[0]
                    profile = (edge_pid(cluster), args.profile.resolve()) if args.profile and first else None
                    loaded, single, ratios = _measure(targets, args, profile)
                per_backend[kind] = {
                    "http": loaded,
                    "edge_over_nginx_per_s": round(statistics.median(ratios["nginx"]), 3),
                    "edge_over_nginx_per_s_each_round": ratios["nginx"],
                    "added_p50_ms": _added(loaded, "p50_ms"),
                    "http_one_connection": single,
                    "added_p50_ms_per_hop_one_connection": _added(single, "p50_ms"),
                }
                if baseline is not None:
                    per_backend[kind] |= {
                        "baseline": baseline.label,
                        "edge_over_baseline_per_s": round(statistics.median(ratios["baseline_edge"]), 3),
                        "edge_over_baseline_per_s_each_round": ratios["baseline_edge"],
                    }
                if kind == "demo":
                    ws_urls = {"direct": _ws_url(direct_url), "edge": _ws_url(edge_url)}
                    ws_lat = asyncio.run(_ws_compare(ws_urls, args.ws_round_trips, args.ws_warmup))
                    ws = {name: summary_ms(values) for name, values in ws_lat.items()}
                    per_backend[kind]["websocket"] = ws | {
                        "round_trips": args.ws_round_trips,
                        "added_p50_ms": round(ws["edge"]["p50_ms"] - ws["direct"]["p50_ms"], 3),
                    }
            share = asyncio.run(_fast_path_share(cluster.edge_url(0)))
    result: dict[str, Any] = {
        "bench": "proxy",
        "wrk": {
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "one_connection_duration_s": args.single_duration,
            "path": "GET /",
            "figures": "median over the interleaved rounds",
        },
        "backends": per_backend,
        "edge_fast_path_share": share,
        "targets": {"edge_over_nginx_per_s": 0.5, "edge_added_p50_ms_per_hop": 0.2},
        **machine_facts(),
    }
    if args.profile and args.profile.exists():
        result["edge_profile"] = _profile_summary(args.profile)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
