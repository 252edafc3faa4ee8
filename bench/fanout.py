"""Fan-out benchmark: one control plane feeding N long-polling edges (N = 1,000 and 10,000).

    .venv/bin/python -m bench.fanout [--clients 1000 10000] [--procs 4] [--commits 20] [--baseline-src DIR]
                                     [--heartbeats 3000]

Runs `meridian control serve` (embedded PostgreSQL in a temp dir) and `--procs` client processes on
loopback that hold N lightweight sync clients between them: each is one keep-alive HTTP/1.1
connection long-polling `GET /v1/sync/changes?since=<cursor>&wait=25`, written straight on an
asyncio protocol (no HTTP library, so the clients cost as little CPU as possible on this shared
machine). Each client keeps its cursor and checks every reply against it: same epoch, `from` equal
to its cursor, every change's version in `(from, to]` and in order. This stands in for N edges (a
real edge also applies the reply to its disk replica; that cost is on the edge, not measured here).

For each of `--commits` region updates (`PUT /v1/regions/bench-fanout`, one version each, the next
only once all N clients have it), the time from its commit (its NOTIFY, received by a LISTEN
connection of this process) to the moment each of the N clients has read a reply that carries it:
the per-client distribution (p50/p95/p99/max over all N x commits) and the time to the last client.
Also the control plane's RSS and CPU seconds over the measured commits, and the load average.

`--baseline-src DIR` first runs the same measurement against the control plane from another
checkout (e.g. `git archive main | tar -x -C DIR`), so the change is shown against a baseline on the
same machine in the same run. Then `--heartbeats` steady-state heartbeats of 1,000 registered nodes
(closed loop, 32 in flight): what each edge costs every HEARTBEAT_INTERVAL_S.
Targets: p99 <= 200 ms at 1,000 clients, <= 1 s at 10,000.
Prints JSON. Every process it starts is stopped on exit, failure included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402

from bench.common import (  # noqa: E402
    ADMIN_TOKEN,
    closed_loop,
    commit_times,
    free_port,
    percentile,
    stop_groups,
    summary_ms,
    wait_http,
)
from control.embedded_db import DATABASE_NAME, EmbeddedPostgres, database_url  # noqa: E402
from meridian import processes  # noqa: E402
from meridian.dev import control_plane_argv  # noqa: E402

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_S = 25


# --- the client processes -------------------------------------------------------------------------


class SyncClient(asyncio.Protocol):
    """One simulated edge: a keep-alive connection long-polling the change feed, cursor kept."""

    def __init__(self, worker: Worker, request_head: bytes, cursor: int, epoch: str | None) -> None:
        self._worker = worker
        self._head = request_head
        self.cursor = cursor
        self.epoch = epoch
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self.connected.set_result(None)
        self._ask()

    def _ask(self) -> None:
        assert self._transport is not None
        request = b"GET /v1/sync/changes?since=%d&wait=%d HTTP/1.1\r\n%s" % (self.cursor, WAIT_S, self._head)
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).lower()
            start = head.find(b"content-length:")
            if start < 0:
                self._worker.fail("reply without content-length")
                return
            stop = head.find(b"\r\n", start)
            length = int(head[start + 15 : stop if stop >= 0 else len(head)])
            if len(self._buf) < end + 4 + length:
                return
            status = int(head[9:12])
            body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            self._reply(status, body)

    def _reply(self, status: int, body: bytes) -> None:
        if status != 200:
            self._worker.fail(f"status {status}: {body[:200]!r}")
            asyncio.get_running_loop().call_later(0.5, self._ask)
            return
        reply = orjson.loads(body)
        if self.epoch is None:
            self.epoch = reply["epoch"]
        versions = [c["version"] for c in reply["changes"]]
        if (
            reply["epoch"] != self.epoch
            or reply["from"] != self.cursor
            or reply["to"] < self.cursor
            or versions != sorted(versions)
            or any(not self.cursor < v <= reply["to"] for v in versions)
        ):
            self._worker.fail(f"not contiguous at cursor {self.cursor}: {body[:200]!r}")
        else:
            before, self.cursor = self.cursor, reply["to"]
            self._worker.applied(before, self.cursor)
        self._ask()

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker.fail(f"connection lost: {exc}")


class Worker:
    def __init__(self, n: int) -> None:
        self.n = n
        self.times: dict[int, list[float]] = {}
        self.errors: list[str] = []

    def applied(self, before: int, after: int) -> None:
        now = time.time()
        for v in range(before + 1, after + 1):
            at = self.times.setdefault(v, [])
            at.append(now)
            if len(at) == self.n:
                _emit({"event": "all_at", "version": v})

    def fail(self, why: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(why)
        else:
            self.errors[-1] = f"... and more: {why}"
        self._count = getattr(self, "_count", 0) + 1


def _same(client: SyncClient) -> SyncClient:
    return client


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.flush()


async def _worker_main(port: int, token: str, n: int, cursor: int) -> None:
    worker = Worker(n)
    loop = asyncio.get_running_loop()
    head = b"Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % token.encode()
    clients = []
    for first in range(0, n, 100):  # in batches: the server's accept backlog is finite
        batch = [SyncClient(worker, head, cursor, None) for _ in range(first, min(n, first + 100))]
        await asyncio.gather(*(loop.create_connection(functools.partial(_same, c), "127.0.0.1", port) for c in batch))
        clients += batch
    _emit({"event": "connected", "clients": len(clients)})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()  # the coordinator says: report and stop
    _emit(
        {
            "event": "report",
            "times": worker.times,
            "errors": worker.errors,
            "error_count": getattr(worker, "_count", 0),
            "cursors": sorted({c.cursor for c in clients}),
        }
    )


def worker_entry(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(_worker_main(args.port, args.token, args.n, args.cursor))


# --- the coordinator ------------------------------------------------------------------------------


class Workers:
    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.at: dict[int, int] = {}  # version -> how many workers have all their clients at it
        self.reports: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []
        self._connected = 0

    @contextlib.asynccontextmanager
    async def running(self, port: int, token: str, n: int, procs: int, cursor: int) -> AsyncIterator[Workers]:
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        try:
            for share in shares:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.fanout", "--worker", "--port", str(port), "--token", token,
                    "--n", str(share), "--cursor", str(cursor),
                    cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    start_new_session=True, limit=2**30,
                )  # fmt: skip
                self.procs.append(proc)
                self._readers.append(asyncio.create_task(self._read(proc)))
            async with asyncio.timeout(300), self._changed:
                await self._changed.wait_for(lambda: self._connected == len(shares))
            yield self
        finally:
            await self.stop()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            event = orjson.loads(line)
            async with self._changed:
                if event["event"] == "connected":
                    self._connected += 1
                elif event["event"] == "all_at":
                    self.at[event["version"]] = self.at.get(event["version"], 0) + 1
                elif event["event"] == "report":
                    self.reports.append(event)
                self._changed.notify_all()

    async def all_at(self, version: int, timeout_s: float = 120) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.at.get(version, 0) == len(self.procs))

    async def report(self) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"report\n")
            await proc.stdin.drain()
        async with asyncio.timeout(120), self._changed:
            await self._changed.wait_for(lambda: len(self.reports) == len(self.procs))
        return self.reports

    async def stop(self) -> None:
        await stop_groups(self.procs)
        for reader in self._readers:
            reader.cancel()


def _tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def measure(url: str, db_url: str, pid: int, n: int, procs: int, commits: int) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    control = psutil.Process(pid)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        r = await http.post(f"{url}/v1/tokens", json={"name": f"fanout-{n}", "scopes": ["edge"]})
        token = str((await r.json())["token"])

        async def commit(i: int) -> None:
            body = {"lat": round(-60 + (i % 1200) * 0.1, 1), "lon": float(n % 180), "edge_url": "http://fanout.test"}
            async with http.put(f"{url}/v1/regions/bench-fanout", json=body) as r:
                assert r.status == 200, await r.text()

        async def version() -> int:
            async with http.get(f"{url}/healthz") as r:
                return int((await r.json())["version"])

        await commit(-1)
        start = await version()
        load_before = os.getloadavg()
        t_connect = time.monotonic()
        async with Workers().running(port, token, n, procs, start) as workers, commit_times(db_url) as committed:
            connect_s = time.monotonic() - t_connect
            await commit(0)  # warm-up: every client is in its long-poll loop once this has reached all
            await workers.all_at(start + 1)
            rss_idle = control.memory_info().rss
            cpu_before, tree_before, wall_before = control.cpu_times(), _tree_cpu_s(control), time.monotonic()
            rss_peak = rss_idle
            for i in range(1, commits + 1):
                await commit(i)
                await workers.all_at(start + 1 + i)
                rss_peak = max(rss_peak, control.memory_info().rss)
            wall = time.monotonic() - wall_before
            cpu_after, tree_after = control.cpu_times(), _tree_cpu_s(control)
            assert await version() == start + 1 + commits, "every commit is one version, and nothing else wrote"
            reports = await workers.report()
        load_after = os.getloadavg()

    per_client: list[float] = []
    to_last: list[float] = []
    for v in range(start + 2, start + 2 + commits):
        at = [t for rep in reports for t in rep["times"][str(v)]]
        assert len(at) == n, f"version {v} reached {len(at)} of {n} clients"
        per_client += [t - committed[v] for t in at]
        to_last.append(max(at) - committed[v])
    errors = sum(rep["error_count"] for rep in reports)

    def ms(values: list[float], p: float) -> float:
        return round(percentile(values, p) * 1000, 1)

    return {
        "clients": n,
        "client_processes": procs,
        "commits": commits,
        "connect_all_s": round(connect_s, 2),
        "commit_to_client_ms": {
            "p50": ms(per_client, 50),
            "p95": ms(per_client, 95),
            "p99": ms(per_client, 99),
            "max": round(max(per_client) * 1000, 1),
        },
        "commit_to_last_client_ms": {"p50": ms(to_last, 50), "max": round(max(to_last) * 1000, 1)},
        "errors": errors,
        "error_samples": [e for rep in reports for e in rep["errors"]][:5],
        "control_plane": {
            "rss_idle_mb": round(rss_idle / 2**20, 1),
            "rss_peak_mb": round(rss_peak / 2**20, 1),
            "cpu_s": round(cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system, 2),
            "cpu_s_with_postgres": round(tree_after - tree_before, 2),
            "cpu_ms_per_commit": round(
                (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / commits * 1000, 1
            ),
            "wall_s": round(wall, 2),
        },
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "target_p99_ms": 200 if n <= 1000 else 1000,
    }


async def heartbeats(url: str, nodes: int, rounds: int, concurrency: int = 32) -> dict[str, Any]:
    """Steady-state heartbeats (a registered node, no backend changes): what N edges cost the control
    plane and PostgreSQL every HEARTBEAT_INTERVAL_S, measured closed-loop."""
    async with aiohttp.ClientSession(headers=AUTH) as http:
        r = await http.post(f"{url}/v1/tokens", json={"name": "fanout-heartbeats", "scopes": ["edge"]})
        edge = {"Authorization": f"Bearer {(await r.json())['token']}"}

    def body(i: int) -> dict[str, Any]:
        return {
            "node_id": f"nd-hb-{i % nodes}", "region": "eu-west", "address": f"http://hb-{i % nodes}.test:1",
            "capacity": 100, "applied_version": 0, "backends": [],
        }  # fmt: skip

    failures = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal failures
        async with session.post(f"{url}/v1/nodes/heartbeat", json=body(i), headers=edge) as r:
            await r.read()
            failures += r.status != 200

    await closed_loop(one, total=nodes, concurrency=concurrency)  # registration: one version each
    elapsed, lat = await closed_loop(one, total=nodes * rounds, concurrency=concurrency)
    return {
        "nodes": nodes,
        "heartbeats": nodes * rounds,
        "per_s": round(nodes * rounds / elapsed, 1),
        **summary_ms(lat),
        "errors": failures,
        "concurrency": concurrency,
    }


@contextlib.contextmanager
def _control_plane(src: Path, data_dir: Path, port: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The control plane from the checkout `src` (its own modules first on the path)."""
    env = processes.clean_env() | {"PYTHONPATH": str(src)}
    with open(data_dir / "control.log", "ab") as log:
        proc = subprocess.Popen(
            control_plane_argv(port, data_dir, ADMIN_TOKEN),
            cwd=src, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 90, proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        processes.stop(proc, grace_s=20)


def run_one(src: Path, sizes: list[int], procs: int, commits: int, beats: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="meridian-fanout-") as tmp,
        _control_plane(src, Path(tmp), free_port()) as (url, proc),
    ):
        admin_url = EmbeddedPostgres(Path(tmp)).start()  # adopts the control plane's running server
        for n in sizes:
            db_url = database_url(admin_url, DATABASE_NAME)
            results.append(asyncio.run(measure(url, db_url, proc.pid, n, procs, commits)))
        if beats:
            results.append({"heartbeats": asyncio.run(heartbeats(url, 1000, max(1, beats // 1000)))})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--procs", type=int, default=4, help="Client processes the clients are spread over.")
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--heartbeats", type=int, default=3000, help="Steady-state heartbeats to time (0: none).")
    parser.add_argument("--baseline-src", type=Path, help="Also measure the control plane of this checkout first.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cursor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_entry(args)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    result: dict[str, Any] = {"bench": "fanout"}
    if args.baseline_src is not None:
        runs = run_one(args.baseline_src, args.clients, args.procs, args.commits, 0)
        result["baseline"] = {"src": str(args.baseline_src), "runs": runs}
    result["this_checkout"] = run_one(REPO, args.clients, args.procs, args.commits, args.heartbeats)
    result["cpus"] = os.cpu_count()
    result["nofile_limit"] = [soft, hard]
    result["python"] = sys.version.split()[0]
    result["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
