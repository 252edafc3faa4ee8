"""A 30 s control-plane outage, measured through an edge of a real dev cluster (every component a
process on loopback; the control plane SIGKILLed and started again, as in a crash).

Prints JSON:
- requests/s and failed requests to an existing backend before, during and after the outage
  (closed loop, CONCURRENCY clients);
- spawn latency (connect → first 200 from the new backend, and its two parts), online (control
  plane up) before the outage, offline (the edge spawns alone) and online again after it, SPAWNS
  each, in the same run and under the same closed-loop load;
- reconciliation: from the control plane answering again to the edge's journal fully taken and
  every offline spawn in the control plane's state, with how many journal entries it replayed
  (keyless spawns of a backend that exits at once add entries without holding processes).

    .venv/bin/python -m bench.outage [--outage-s 30] [--journal-entries 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.edge_cluster import AUTH, dev_cluster
from meridian import faults
from meridian.dev import DevCluster

CONCURRENCY = 8
SPAWNS = 10
PHASE_S = 10.0


class Load(threading.Thread):
    """Closed-loop GETs to one backend, on a thread with its own event loop (so the main thread
    can kill and restart processes meanwhile); counts per phase."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "info"
        self.phase = "before"
        self.counts: dict[str, dict[str, float]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._client(session) for _ in range(CONCURRENCY)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._halt.is_set():
            phase = self.counts.setdefault(self.phase, {"ok": 0, "failed": 0, "started": time.monotonic()})
            try:
                async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    phase["ok" if r.status == 200 else "failed"] += 1
            except (aiohttp.ClientError, TimeoutError):
                phase["failed"] += 1

    def switch(self, phase: str) -> None:
        current = self.counts.get(self.phase)
        if current is not None:
            current["ended"] = time.monotonic()
        self.phase = phase

    def stop(self) -> dict[str, dict[str, float]]:
        self.switch("done")
        self._halt.set()
        self.join(30)
        out = {}
        for name, c in self.counts.items():
            if name == "done":
                continue
            seconds = c.get("ended", time.monotonic()) - c["started"]
            out[name] = {
                "seconds": round(seconds, 1),
                "requests_per_s": round(c["ok"] / seconds, 1),
                "failed": int(c["failed"]),
                "error_rate": round(c["failed"] / max(1, c["ok"] + c["failed"]), 6),
            }
        return out


def _connect(cluster: DevCluster, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{cluster.edge_url(0)}/v1/connect", json=body, headers=AUTH, timeout=30)
    r.raise_for_status()
    return dict(r.json())


def _first_200(url: str, timeout_s: float = 60, client: httpx.Client | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    with contextlib.ExitStack() as stack:
        http = client or stack.enter_context(httpx.Client(timeout=10))
        while time.monotonic() < deadline:
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.002)
    raise RuntimeError(f"{url} never answered 200")


def spawn_latencies(cluster: DevCluster, prefix: str) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Per spawn: connect → first 200 (`total`), and its two parts: connect → answer (`answer`),
    answer → first 200 (`ready`, the backend starting and the edge seeing it ready)."""
    out: dict[str, list[float]] = {"total": [], "answer": [], "ready": []}
    answers = []
    # One client for every request, connections kept: what is timed is the edge and the backend,
    # not the making of HTTP clients (tens of ms each on a loaded machine).
    with httpx.Client(timeout=30) as http:
        for i in range(SPAWNS):
            t0 = time.perf_counter()
            body = {"key": f"{prefix}-{i}", "template": "demo"}
            r = http.post(f"{cluster.edge_url(0)}/v1/connect", json=body, headers=AUTH)
            r.raise_for_status()
            answer = dict(r.json())
            t1 = time.perf_counter()
            _first_200(answer["url"] + "info", client=http)
            t2 = time.perf_counter()
            out["total"].append((t2 - t0) * 1000)
            out["answer"].append((t1 - t0) * 1000)
            out["ready"].append((t2 - t1) * 1000)
            answers.append(answer)
    return out, answers


def _ms(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 1), "max_ms": round(max(values), 1)}


def _spawn_ms(parts: dict[str, list[float]]) -> dict[str, Any]:
    return {**_ms(parts["total"]), "answer": _ms(parts["answer"]), "ready": _ms(parts["ready"])}


def _status(cluster: DevCluster) -> dict[str, Any]:
    return dict(httpx.get(f"{cluster.edge_url(0)}/v1/edge/status", timeout=5).json())


def run(outage_s: float, journal_entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp, dev_cluster(Path(tmp)) as cluster:
        httpx.put(
            f"{cluster.control_url}/v1/templates/brief",
            json={"executor": "process", "argv": ["/bin/true"]},
            headers=AUTH,
            timeout=10,
        ).raise_for_status()
        existing = _connect(cluster, {"key": "bench-existing", "template": "demo"})
        _first_200(existing["url"] + "info")
        time.sleep(1.0)  # every edge has the templates and backends in its replica
        load = Load(existing["url"])
        load.start()
        # Online spawns under the same load as the offline ones below: the baseline is measured
        # in the conditions it is compared in (not on an idle edge).
        online, _ = spawn_latencies(cluster, "bench-online")
        time.sleep(PHASE_S)

        load.switch("during")
        faults.kill(cluster, "control plane")
        down_at = time.monotonic()
        while _status(cluster)["control_plane"] != "unreachable":
            time.sleep(0.05)
        offline, offline_answers = spawn_latencies(cluster, "bench-offline")
        keyless = []
        while _status(cluster)["journal_pending"] < journal_entries:
            keyless.append(_connect(cluster, {"template": "brief"}))
        pending = _status(cluster)["journal_pending"]
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))

        load.switch("after")
        restart_s = faults.restart(cluster, "control plane", f"{cluster.control_url}/healthz")
        back_at = time.monotonic()
        spawned = [a["backend_id"] for a in offline_answers + keyless]
        with httpx.Client(base_url=cluster.control_url, headers=AUTH, timeout=10) as api:
            while True:
                if _status(cluster)["journal_pending"] == 0 and all(
                    api.get(f"/v1/backends/{b}").status_code == 200 for b in spawned[-1:] + spawned[:1]
                ):
                    break
                time.sleep(0.02)
            reconcile_s = time.monotonic() - back_at
            adopted = sum(api.get(f"/v1/backends/{b}").status_code == 200 for b in spawned)
        # Online again, under the same load: online before and after bracket the offline figure,
        # so a machine that got busier or quieter meanwhile shows as a gap between the two.
        online_after, _ = spawn_latencies(cluster, "bench-online-after")
        time.sleep(PHASE_S)
        phases = load.stop()
    return {
        "bench": "outage",
        "outage_s": outage_s,
        "concurrency": CONCURRENCY,
        "proxied_requests": phases,
        "spawn_online": _spawn_ms(online),
        "spawn_offline": _spawn_ms(offline),
        "spawn_online_after": _spawn_ms(online_after),
        "control_plane_restart_s": round(restart_s, 2),
        "reconciliation": {
            "journal_entries": pending,
            "offline_spawns": len(spawned),
            "adopted": adopted,
            "seconds_from_return": round(reconcile_s, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--journal-entries", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(run(args.outage_s, args.journal_entries), indent=2))


if __name__ == "__main__":
    main()
