"""Offline operation on a real two-region dev cluster, faults injected by killing processes:
the control plane SIGKILLed for 30 s under load, reconciliation when it is back, split brain,
and an edge SIGKILLed with running backends (issue 9, tests 1-4)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from meridian import faults
from meridian.dev import DevCluster
from sync.offline import NODE_TAG_BITS
from sync.timing import EMBEDDED_DB_RECOVERY_S, RECONCILE_WITHIN_S
from tests.e2e.dev_api import AUTH, running_cluster
from tests.e2e.dev_api import connect as _connect
from tests.e2e.dev_api import edge_status as _status
from tests.e2e.dev_api import serves as _serves
from tests.e2e.dev_api import wait_for as _wait_for

REGIONS = ["eu-west", "us-east"]
OUTAGE_S = 30.0
KEYS: list[str] = []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    data_dir = tmp_path_factory.mktemp("offline")
    try:
        with running_cluster(REGIONS, data_dir) as dev:
            yield dev
    finally:
        faults.kill_backends(KEYS, data_dir)  # whatever a failed test left behind


def _key(name: str) -> str:
    KEYS.append(name)
    return name


def _live(cluster: DevCluster, key: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{cluster.control_url}/v1/backends", params={"key": key}, headers=AUTH, timeout=5).json()
    return [b for b in rows if b["status"] in ("scheduled", "starting", "ready")]


def _backend(cluster: DevCluster, backend_id: str) -> dict[str, Any] | None:
    r = httpx.get(f"{cluster.control_url}/v1/backends/{backend_id}", headers=AUTH, timeout=5)
    row: dict[str, Any] | None = r.json() if r.status_code == 200 else None
    return row


class _Load(threading.Thread):
    """Steady GETs through the edge to existing backends; every answer that is not a 200 is a failure."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.ok = 0
        self.failed: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._halt.is_set():
                for url in self.urls:
                    try:
                        r = client.get(url + "info")
                        if r.status_code == 200:
                            self.ok += 1
                        else:
                            self.failed.append(f"{r.status_code} {r.text[:100]}")
                    except httpx.TransportError as exc:
                        self.failed.append(repr(exc))
                time.sleep(0.01)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)


def _restart_control(cluster: DevCluster) -> None:
    faults.restart(cluster, "control plane", f"{cluster.control_url}/healthz")


def test_outage_routes_connects_spawns_restarts_and_reconciles(cluster: DevCluster) -> None:
    old, fresh, new = _key("off-old"), _key("off-fresh"), _key("off-new")
    before = _connect(cluster, 0, key=old)
    _wait_for(lambda: _serves(before["url"], before["backend_id"]), 30, "the first backend to serve")
    just = _connect(cluster, 0, key=fresh)
    # The control plane dies a moment after this backend became ready: the replica may still say `starting`.
    _wait_for(lambda: _serves(just["url"], just["backend_id"]), 30, "the second backend to serve")
    faults.kill(cluster, "control plane")
    down_at = time.monotonic()
    load = _Load([before["url"], just["url"]])
    load.start()
    try:
        _wait_for(lambda: _status(cluster, 0)["control_plane"] == "unreachable", 15, "the edge to notice")
        for answer, key in ((before, old), (just, fresh)):
            again = _connect(cluster, 0, key=key)
            assert again["backend_id"] == answer["backend_id"] and not again["spawned"]
        spawned = _connect(cluster, 0, key=new)
        assert spawned["spawned"] and spawned["placement"]["reason"] == "offline"
        assert spawned["region"] == "eu-west" and spawned["fencing_token"] >= 1 << NODE_TAG_BITS
        keyless = _connect(cluster, 0)
        assert keyless["placement"]["reason"] == "offline" and keyless["key"] is None
        _wait_for(lambda: _serves(spawned["url"], spawned["backend_id"]), 30, "the offline spawn to serve")
        assert _serves(keyless["url"], keyless["backend_id"])
        status = _status(cluster, 0)
        assert status["control_plane"] == "unreachable" and status["journal_pending"] >= 2

        # The edge is restarted (it crashes) during the outage: it serves from disk at once.
        load.stop()
        faults.kill(cluster, "edge eu-west")
        serving_s = faults.restart(cluster, "edge eu-west", before["url"] + "info")
        assert serving_s < 10, f"the restarted edge took {serving_s:.2f}s to serve"
        t0 = time.monotonic()
        _wait_for(lambda: all(_serves(a["url"], a["backend_id"]) for a in (before, just, spawned, keyless)), 1.0, "all")
        assert time.monotonic() - t0 <= 1.0
        assert [len(faults.backend_processes(k, cluster.data_dir)) for k in (old, fresh, new)] == [1, 1, 1]
        load = _Load([before["url"], just["url"], spawned["url"]])
        load.start()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    finally:
        load.stop()
        if cluster.procs[0][1].poll() is not None:
            _restart_control(cluster)
    back_at = time.monotonic()
    assert load.failed == [] and load.ok > 0, load.failed[:5]

    def reconciled() -> bool:
        rows = [(_backend(cluster, a["backend_id"]), a) for a in (spawned, keyless)]
        return all(r is not None and r["fencing_token"] == a["fencing_token"] for r, a in rows)

    _wait_for(reconciled, RECONCILE_WITHIN_S + 10, "the offline spawns to be adopted")
    took = time.monotonic() - back_at
    assert took <= RECONCILE_WITHIN_S, f"reconciliation took {took:.1f}s"
    for key in (old, fresh, new):
        assert len(_live(cluster, key)) == 1, f"{key} must have exactly one live backend"
    _wait_for(lambda: _status(cluster, 0)["journal_pending"] == 0, 10, "the journal to be taken")
    # A connect after the return reaches the control plane, which answers the adopted backend.
    assert _connect(cluster, 1, key=new)["backend_id"] == spawned["backend_id"]


def test_split_brain_keeps_exactly_one_and_sends_the_losers_clients_to_it(cluster: DevCluster) -> None:
    key = _key("off-split")
    faults.kill(cluster, "control plane")
    try:
        for i in (0, 1):
            _wait_for(lambda i=i: _status(cluster, i)["control_plane"] == "unreachable", 15, "edges to notice")
        answers = [_connect(cluster, i, key=key) for i in (0, 1)]
        assert [a["placement"]["reason"] for a in answers] == ["offline", "offline"]
        assert [a["region"] for a in answers] == REGIONS
        assert answers[0]["fencing_token"] != answers[1]["fencing_token"], "two nodes never share a token"
        for a in answers:
            _wait_for(lambda a=a: _serves(a["url"], a["backend_id"]), 30, "both sides to serve")
        winner, loser = sorted(answers, key=lambda a: (a["fencing_token"], a["backend_id"]), reverse=True)
        watch = _WebSocketWatch(loser["url"])
        watch.start()
        assert watch.opened.wait(30) and watch.error is None, watch.error
        _restart_control(cluster)
        watch.join(60)
    finally:
        if cluster.procs[0][1].poll() is not None:
            _restart_control(cluster)
    assert watch.closed == (4000, "superseded"), (watch.closed, watch.error)
    live = _wait_for(lambda: rows if len(rows := _live(cluster, key)) == 1 else None, 10, "one survivor")
    assert live[0]["id"] == winner["backend_id"], "the greater fencing token survives"
    lost = _wait_for(
        lambda: (b := _backend(cluster, loser["backend_id"])) and b["status"] == "terminated" and b, 10, "x"
    )
    assert lost["termination_reason"] == "superseded"
    # The loser's HTTP clients are sent to the winner.
    r = httpx.get(loser["url"] + "info", timeout=10, follow_redirects=True)
    assert r.status_code == 200 and r.json()["backend_id"] == winner["backend_id"]
    _wait_for(lambda: len(faults.backend_processes(key, cluster.data_dir)) == 1, 15, "the loser's process to stop")


class _WebSocketWatch(threading.Thread):
    """A WebSocket to a backend, opened and echoing, then held until the edge closes it.

    A thread of its own: the control plane must be restarted from the main thread, as a child
    started from a short-lived thread would get its parent-death signal when that thread ends."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url.replace("http://", "ws://") + "ws"
        self.opened = threading.Event()
        self.closed: tuple[int | None, str] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.closed = asyncio.run(self._watch())
        except BaseException as exc:
            self.error = exc
            self.opened.set()

    async def _watch(self) -> tuple[int | None, str]:
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=10)).data == "hello"
            self.opened.set()
            msg = await ws.receive(timeout=60)
            while msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                msg = await ws.receive(timeout=60)
            return ws.close_code, (msg.extra or "") if msg.type is aiohttp.WSMsgType.CLOSE else str(msg.type)


def _serving_on_us_east(
    cluster: DevCluster, prefix: str, n: int
) -> tuple[list[str], list[dict[str, Any]], list[list[int]]]:
    """`n` keys with a serving backend on the us-east edge, and the one process of each."""
    keys = [_key(f"{prefix}-{i}") for i in range(n)]
    answers = [_connect(cluster, 1, key=k) for k in keys]
    for a in answers:
        _wait_for(lambda a=a: _serves(a["url"], a["backend_id"]), 30, "backends to serve")
    pids = [faults.backend_processes(k, cluster.data_dir) for k in keys]
    assert all(len(p) == 1 for p in pids)
    return keys, answers, pids


def _same_processes_serve(
    cluster: DevCluster, answers: list[dict[str, Any]], keys: list[str], pids: list[list[int]]
) -> None:
    for a, k, before in zip(answers, keys, pids, strict=True):
        again = _connect(cluster, 1, key=k)
        assert again["backend_id"] == a["backend_id"] and not again["spawned"]
        _wait_for(lambda a=a: _serves(a["url"], a["backend_id"]), 10, "the adopted backend to serve")
        assert httpx.get(a["url"] + "info", timeout=5).json()["pid"] == before[0], "the same process serves"
        assert faults.backend_processes(k, cluster.data_dir) == before, "no second process for the key"


def _still_ready(cluster: DevCluster, answers: list[dict[str, Any]], keys: list[str], pids: list[list[int]]) -> None:
    time.sleep(3)  # two heartbeats: nothing marks the adopted backends lost or starts another
    for a, k, before in zip(answers, keys, pids, strict=True):
        row = _backend(cluster, a["backend_id"])
        assert row is not None and row["status"] == "ready"
        assert faults.backend_processes(k, cluster.data_dir) == before


def test_an_edge_killed_with_running_backends_adopts_them_and_starts_no_second_process(
    cluster: DevCluster,
) -> None:
    keys, answers, pids = _serving_on_us_east(cluster, "off-adopt", 3)
    faults.kill(cluster, "edge us-east")
    faults.restart(cluster, "edge us-east", f"{cluster.edge_url(1)}/v1/edge/status")
    _same_processes_serve(cluster, answers, keys, pids)
    _still_ready(cluster, answers, keys, pids)


def test_an_edge_restarted_for_an_upgrade_keeps_its_backends_running(cluster: DevCluster) -> None:
    """SIGUSR2, or SIGTERM with `--on-exit keep`: the edge exits cleanly (code 0) leaving its
    backends running; the next edge on its data directory adopts them. SIGTERM without it stops them."""
    keys, answers, pids = _serving_on_us_east(cluster, "off-upgrade", 2)
    command = faults.argv(cluster, "edge us-east")
    ready = f"{cluster.edge_url(1)}/v1/edge/status"

    def running() -> list[list[int]]:
        return [faults.backend_processes(k, cluster.data_dir) for k in keys]

    assert faults.stop(cluster, "edge us-east", signal.SIGUSR2) == 0
    assert running() == pids, "the backends outlive the edge"
    faults.restart(cluster, "edge us-east", ready, command=[*command, "--on-exit", "keep"])
    _same_processes_serve(cluster, answers, keys, pids)

    assert faults.stop(cluster, "edge us-east", signal.SIGTERM) == 0
    assert running() == pids
    faults.restart(cluster, "edge us-east", ready, command=command)
    _same_processes_serve(cluster, answers, keys, pids)
    _still_ready(cluster, answers, keys, pids)

    # The default clean stop still stops them (and says so), so `meridian dev` leaves nothing behind.
    assert faults.stop(cluster, "edge us-east", signal.SIGTERM) == 0
    assert running() == [[], []]
    faults.restart(cluster, "edge us-east", ready, command=command)
    for a in answers:
        row = _backend(cluster, a["backend_id"])
        assert row is not None and row["status"] == "terminated"


def test_embedded_postgres_killed_under_connect_load_recovers_by_itself(cluster: DevCluster) -> None:
    r = httpx.put(
        f"{cluster.control_url}/v1/templates/brief", json={"executor": "process", "argv": ["/bin/true"]}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    pid_file = cluster.data_dir / "control" / "postgres" / "postmaster.pid"
    answers: list[tuple[str, int | None, str | None, dict[str, Any] | None]] = []
    halt = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=cluster.control_url, headers=AUTH, timeout=15) as api:
            n = 0
            while not halt.is_set():
                key, n = f"off-pg-{n}", n + 1
                try:
                    r = api.post("/v1/connect", json={"key": key, "template": "brief"})
                except httpx.TransportError:
                    answers.append((key, None, None, None))
                    continue
                answers.append((key, r.status_code, r.headers.get("Retry-After"), r.json()))
                time.sleep(0.02)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        _wait_for(lambda: len(answers) >= 10, 30, "connects before the kill")
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        killed_at, seen = time.monotonic(), len(answers)
        _wait_for(lambda: any(a[1] == 503 for a in answers[seen:]), 10, "a 503 during the outage")
        _wait_for(lambda: answers[-1][1] == 200 and answers[-2][1] == 200, 30, "connects to succeed again")
        recovered_s = time.monotonic() - killed_at
    finally:
        halt.set()
        worker.join(30)
    assert recovered_s <= EMBEDDED_DB_RECOVERY_S, f"the control plane served again after {recovered_s:.1f}s"
    assert {a[1] for a in answers} <= {200, 503}, {a[1] for a in answers}
    for key, status, retry_after, body in answers:
        rows = httpx.get(f"{cluster.control_url}/v1/backends", params={"key": key}, headers=AUTH, timeout=10).json()
        if status == 200:
            assert body is not None and [b["id"] for b in rows] == [body["backend_id"]], key
        else:
            assert retry_after is not None and int(retry_after) >= 1, key
            assert body is not None and body["error"]["code"] == "database_unavailable"
            # A commit can reach the database just before it dies, and its answer be lost: at most
            # that one backend, whole (a retry of the key gets it back: connect is setdefault).
            assert len(rows) <= 1 and all(r["key"] == key and r["fencing_token"] >= 1 for r in rows), rows
    log = (cluster.data_dir / "logs" / "control.log").read_text()
    assert log.count("Traceback") == 0, "an outage is one log line, not a traceback per request"
