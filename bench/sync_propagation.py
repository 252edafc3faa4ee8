"""Sync benchmark: propagation to 20 edge replicas, a 100,000-backend snapshot, change-reply size.

    .venv/bin/python bench/sync_propagation.py [--edges 20] [--writes 200] [--backends 100000]

Runs `meridian control serve` (embedded PostgreSQL in a temp dir) and `--edges` replica processes
(`python -m edge.replica_runner`, each its own sync loop and diskcache directory) on loopback.

  propagation   `--writes` region updates (PUT /v1/regions, one version each, paced `--gap-ms`
                apart); for each, the time from its commit to the moment the LAST of the replicas
                has applied it (visible to lookups). The commit is timestamped by the version's
                NOTIFY arriving on a LISTEN connection of this process; also shown from the write
                request's start (an upper bound: it adds the request's own handling before the
                commit) and from its response. Target p99 <= 100 ms.
  snapshot      `--backends` ready backends, each with its key, inserted straight with SQL; one
                fresh replica process applies a full snapshot: wall time from request to published
                generation, and the process's peak RSS. Target <= 5 s, <= 300 MB.
  reply_size    bytes of a `changes` reply carrying one change, with 1,000 and with `--backends`
                backends in the state: it grows with the changes, not with the state.
Prints JSON. Every process it starts is stopped on exit, failure included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.common import ADMIN_TOKEN, commit_times, control_plane, free_port, percentile, stop_groups  # noqa: E402
from control.embedded_db import DATABASE_NAME, EmbeddedPostgres, database_url  # noqa: E402

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Replicas:
    """The replica processes and what they report."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.applied: list[list[tuple[int, float, float]]] = []  # per replica: (version, t, apply_ms)
        self._readers: list[asyncio.Task[None]] = []
        self._changed = asyncio.Condition()
        self._logs: list[IO[bytes]] = []

    @contextlib.asynccontextmanager
    async def running(self, n: int, url: str, token: str, root: Path) -> AsyncIterator[Replicas]:
        try:
            for i in range(n):
                proc = await asyncio.create_subprocess_exec(
                    *_runner_argv(url, token, root / f"replica-{i}"),
                    cwd=REPO,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=self._log(root / f"replica-{i}.log"),
                    start_new_session=True,
                )
                self.procs.append(proc)
                self.applied.append([])
                self._readers.append(asyncio.create_task(self._read(i, proc)))
            yield self
        finally:
            await self.stop()
            for log in self._logs:
                log.close()

    def _log(self, path: Path) -> IO[bytes]:
        log = open(path, "wb")  # closed by running()
        self._logs.append(log)
        return log

    async def _read(self, i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "applied":
                async with self._changed:
                    self.applied[i].append((event["version"], event["t"], event["apply_ms"]))
                    self._changed.notify_all()

    def _at(self, version: int) -> bool:
        return all(a and a[-1][0] >= version for a in self.applied)

    async def all_at(self, version: int, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self._at(version))

    def first_applied(self, version: int) -> list[float]:
        """Per replica, when it first held `version` (or later)."""
        return [next(t for v, t, _ in a if v >= version) for a in self.applied]

    async def stop(self) -> None:
        await stop_groups(self.procs)
        for reader in self._readers:
            reader.cancel()


async def _setup(http: aiohttp.ClientSession, url: str) -> str:
    r = await http.post(f"{url}/v1/tokens", json={"name": "bench-edge", "scopes": ["edge"]})
    token = str((await r.json())["token"])
    await http.put(f"{url}/v1/regions/eu-west", json={"lat": 53.35, "lon": -6.26, "edge_url": "http://eu.test"})
    await http.put(f"{url}/v1/templates/demo", json={"executor": "process", "argv": ["true"]})
    hb = {
        "node_id": "nd-bench",
        "region": "eu-west",
        "address": "http://nd.test:1",
        "capacity": 1_000_000,
        "applied_version": 0,
        "backends": [],
    }
    await http.post(f"{url}/v1/nodes/heartbeat", json=hb, headers={"Authorization": f"Bearer {token}"})
    return token


async def _version(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/healthz") as r:
        return int((await r.json())["version"])


async def propagation(
    http: aiohttp.ClientSession, url: str, db_url: str, token: str, root: Path, edges: int, writes: int, gap_s: float
) -> dict[str, Any]:
    async with (
        Replicas().running(edges, url, token, root) as replicas,
        commit_times(db_url) as committed,
    ):
        start_version = await _version(http, url)
        await replicas.all_at(start_version, timeout_s=120)
        sent, answered = [], []
        for i in range(writes):
            body = {"lat": round(-60 + (i % 1200) * 0.1, 1), "lon": 0.0, "edge_url": "http://bench.test"}
            t0 = time.time()
            async with http.put(f"{url}/v1/regions/bench-r", json=body) as r:
                assert r.status == 200, await r.text()
            sent.append(t0)
            answered.append(time.time())
            await asyncio.sleep(gap_s)
        final = await _version(http, url)
        assert final == start_version + writes, "every write is one version, and nothing else wrote"
        await replicas.all_at(final)
        from_commit, from_request, from_response = [], [], []
        for i in range(writes):
            version = start_version + 1 + i
            last = max(replicas.first_applied(version))
            from_commit.append(last - committed[version])
            from_request.append(last - sent[i])
            from_response.append(last - answered[i])
        apply_ms = [ms for a in replicas.applied for v, _, ms in a if v > start_version]

    def ms(values: list[float], p: float) -> float:
        return round(percentile(values, p) * 1000, 2)

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50_ms": ms(values, 50), "p99_ms": ms(values, 99), "max_ms": round(max(values) * 1000, 2)}

    return {
        "edges": edges,
        "writes": writes,
        "gap_ms": gap_s * 1000,
        "commit_to_all_edges": summary(from_commit),
        "write_request_to_all_edges": summary(from_request),
        "write_response_to_all_edges": summary(from_response),
        "reply_apply_ms": {"p50": round(percentile(apply_ms, 50), 3), "p99": round(percentile(apply_ms, 99), 3)},
        "target_p99_ms": 100,
    }


_INSERT_BACKENDS = """
INSERT INTO backends (id, key, template_name, template_id, region, node_id, address, status, fencing_token,
                      owner_token_id, user_id, secret)
SELECT 'bk-' || lpad(to_hex(i), 16, '0'), 'doc-' || i, 'demo', $3, 'eu-west', 'nd-bench',
       '127.0.0.1:' || (20000 + i % 40000), 'ready', 1, 'tk-0123456789abcdef', 'user-' || (i % 997),
       substr(md5(i::text) || md5((i * 7)::text), 1, 32)
FROM generate_series($1::int, $2::int) AS i
"""
_INSERT_KEYS = """
INSERT INTO keys (key, backend_id, fencing_token)
SELECT 'doc-' || i, 'bk-' || lpad(to_hex(i), 16, '0'), 1 FROM generate_series($1::int, $2::int) AS i
"""


async def add_backends(db_url: str, first: int, last: int) -> None:
    """Backends with keys straight into the tables (triggers off: this is a fixture, not a workload)."""
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            template_id = await conn.fetchval("SELECT template_id FROM template_names WHERE name = 'demo'")
            await conn.execute(_INSERT_BACKENDS, first, last, template_id)
            await conn.execute(_INSERT_KEYS, first, last)
        await conn.execute("ANALYZE backends")
        await conn.execute("ANALYZE keys")
    finally:
        await conn.close()


async def reply_bytes(http: aiohttp.ClientSession, url: str, token: str, lat: float) -> int:
    await http.put(f"{url}/v1/regions/bench-size", json={"lat": lat, "lon": 0.0, "edge_url": "http://s.test"})
    v = await _version(http, url)
    async with http.get(
        f"{url}/v1/sync/changes", params={"since": v - 1}, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return len(await r.read())


def _runner_argv(url: str, token: str, directory: Path, *extra: str) -> list[str]:
    """The command line of one edge replica process (edge/replica_runner.py)."""
    return [
        sys.executable,
        "-m",
        "edge.replica_runner",
        "--control",
        url,
        "--token",
        token,
        "--dir",
        str(directory),
        *extra,
    ]


async def snapshot_apply(url: str, token: str, root: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *_runner_argv(url, token, root / "snapshot-replica", "--snapshot-only"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    report = next(json.loads(line) for line in out.splitlines() if b'"snapshot"' in line)
    return {
        "objects": report["count"],
        "seconds": round(report["seconds"], 2),
        "peak_rss_mb": round(report["peak_rss_mb"], 1),
        "target_seconds": 5,
        "target_peak_rss_mb": 300,
    }


async def run(args: argparse.Namespace, url: str, db_url: str, root: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        token = await _setup(http, url)
        result: dict[str, Any] = {"bench": "sync_propagation"}
        result["propagation"] = await propagation(
            http, url, db_url, token, root, args.edges, args.writes, args.gap_ms / 1000
        )
        await add_backends(db_url, 1, 1000)
        small = await reply_bytes(http, url, token, 1.0)
        await add_backends(db_url, 1001, args.backends)
        large = await reply_bytes(http, url, token, 2.0)
        result["reply_size"] = {
            "one_change_1k_backends_bytes": small,
            f"one_change_{args.backends // 1000}k_backends_bytes": large,
        }
        result["snapshot"] = {
            "backends": args.backends,
            "keys": args.backends,
            **await snapshot_apply(url, token, root),
        }
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="Pause between writes.")
    parser.add_argument("--backends", type=int, default=100_000)
    args = parser.parse_args()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with (
        tempfile.TemporaryDirectory(prefix="meridian-sync-bench-") as tmp,
        control_plane(Path(tmp), free_port()) as url,
    ):
        admin_url = EmbeddedPostgres(Path(tmp)).start()  # adopts the control plane's running server
        result = asyncio.run(run(args, url, database_url(admin_url, DATABASE_NAME), Path(tmp)))
    result["cpus"] = os.cpu_count()
    result["python"] = sys.version.split()[0]
    result["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
