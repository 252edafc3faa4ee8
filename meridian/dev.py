"""`meridian dev`: the whole system on one machine — an embedded PostgreSQL, the control plane
and one edge per region, each a real process on loopback — stopped cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from meridian import processes
from sync.catalog import KNOWN_REGIONS
from sync.net import free_port_block as free_port_block  # re-exported for callers of its old home

DEMO_TEMPLATE = {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"], "idle_timeout_s": 300}


class DevError(RuntimeError):
    pass


def control_plane_argv(port: int, data_dir: Path, admin_token: str, *extra: str) -> list[str]:
    """`meridian control serve` as `meridian dev`, the tests and the benchmarks all start it."""
    return [
        sys.executable, "-m", "meridian", "control", "serve",
        "--port", str(port), "--data-dir", str(data_dir), "--admin-token", admin_token, *extra,
    ]  # fmt: skip


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 90) -> None:
    """Until `url` answers 200 (polled: the server is another process); DevError if `proc` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevError(f"{what} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise DevError(f"{what} did not answer at {url} within {timeout_s:.0f}s")


def start_control_plane(
    port: int, data_dir: Path, admin_token: str, log_path: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """The control plane as a process of its own (embedded PostgreSQL in `data_dir` unless `extra`
    names a database), answering /healthz when this returns; stop it with `processes.stop`."""
    proc = processes.start(control_plane_argv(port, data_dir, admin_token, *extra), log_path, processes.clean_env())
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, "the control plane")
    except BaseException:
        processes.stop(proc)
        raise
    return proc


@dataclass
class DevCluster:
    regions: list[str]
    port: int
    data_dir: Path
    admin_token: str
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    edge_args: tuple[str, ...] = ()
    """More `meridian edge serve` flags for every edge (benchmarks: e.g. `--capacity`)."""

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def edge_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.port + 1 + index}"

    def _wait(self, url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 90) -> None:
        try:
            wait_http(url, proc, what, timeout_s)
        except DevError as exc:
            raise DevError(f"{exc}; see {self.data_dir / 'logs'}") from exc

    def start(self) -> None:
        logs = self.data_dir / "logs"
        try:
            control = start_control_plane(self.port, self.data_dir / "control", self.admin_token, logs / "control.log")
        except DevError as exc:
            raise DevError(f"{exc}; see {logs}") from exc
        self.procs.append(("control plane", control))
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.control_url, headers=auth, timeout=30) as api:
            for i, name in enumerate(self.regions):
                known = KNOWN_REGIONS[name]
                api.put(
                    f"/v1/regions/{name}", json={"lat": known.lat, "lon": known.lon, "edge_url": self.edge_url(i)}
                ).raise_for_status()
            api.put("/v1/templates/demo", json=DEMO_TEMPLATE).raise_for_status()
            edge_token = api.post("/v1/tokens", json={"name": "dev edges", "scopes": ["edge"]}).json()["token"]
        for i, name in enumerate(self.regions):
            edge = processes.start(
                [
                    sys.executable,
                    "-m",
                    "meridian",
                    "edge",
                    "serve",
                    "--region",
                    name,
                    "--control-url",
                    self.control_url,
                    "--port",
                    str(self.port + 1 + i),
                    "--data-dir",
                    str(self.data_dir / f"edge-{name}"),
                    "--token",
                    edge_token,
                    *self.edge_args,
                ],
                logs / f"edge-{name}.log",
                processes.clean_env(),
            )
            self.procs.append((f"edge {name}", edge))
        for i, name in enumerate(self.regions):
            self._wait(f"{self.edge_url(i)}/v1/edge/status", self.procs[1 + i][1], f"edge {name}")
        self._wait_nodes_healthy(auth)
        self._wait_edges_caught_up()

    def _wait_nodes_healthy(self, auth: dict[str, str], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            regions = httpx.get(f"{self.control_url}/v1/regions", headers=auth, timeout=5).json()
            healthy = {r["name"] for r in regions if any(n["healthy"] for n in r["nodes"])}
            if healthy >= set(self.regions):
                return
            time.sleep(0.1)
        raise DevError("edges did not register with the control plane in time")

    def _wait_edges_caught_up(self, timeout_s: float = 30) -> None:
        """Until every edge has applied the version that holds the admin token and the template, a
        connect at an edge could be refused; the cluster is not "up" before that."""
        version = httpx.get(f"{self.control_url}/healthz", timeout=5).json()["version"]
        deadline = time.monotonic() + timeout_s
        for i in range(len(self.regions)):
            while httpx.get(f"{self.edge_url(i)}/v1/edge/status", timeout=5).json()["applied_version"] < version:
                if time.monotonic() > deadline:
                    raise DevError(f"edge {self.regions[i]} did not catch up with the control plane in time")
                time.sleep(0.05)

    def stop(self) -> None:
        """Edges first (they stop their backends), then the control plane (it stops PostgreSQL)."""
        for _, proc in reversed(self.procs):
            processes.stop(proc)
        self.procs.clear()

    def banner(self) -> str:
        lines = [
            "Meridian dev cluster is up.",
            f"  control plane  {self.control_url}",
            f"  dashboard      {self.control_url}/ui/  (sign in with the admin token)",
            *(f"  edge {name:<12} {self.edge_url(i)}" for i, name in enumerate(self.regions)),
            f"  admin token    {self.admin_token}",
            f"  logs           {self.data_dir / 'logs'}",
            "",
            "Try:",
            f"  curl -s -X POST {self.edge_url(0)}/v1/connect -H 'Authorization: Bearer {self.admin_token}' \\",
            '       -d \'{"key": "doc-42", "template": "demo"}\'',
            '  then open the "url" it returns. Ctrl-C stops everything.',
        ]
        return "\n".join(lines)


def run(regions: list[str], port: int, data_dir: Path, admin_token: str | None) -> int:
    unknown = [r for r in regions if r not in KNOWN_REGIONS]
    if unknown:
        raise DevError(f"unknown region(s) {', '.join(unknown)}; known: {', '.join(KNOWN_REGIONS)}")
    if len(set(regions)) != len(regions) or not regions:
        raise DevError("--regions must name one or more distinct regions")
    cluster = DevCluster(regions, port, data_dir.resolve(), admin_token or "dev-" + secrets.token_urlsafe(18))
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.start()
        print(cluster.banner(), flush=True)
        while not stop_requested.wait(0.5):
            for name, proc in cluster.procs:
                if proc.poll() is not None:
                    raise DevError(f"{name} exited with code {proc.returncode}; see {cluster.data_dir / 'logs'}")
        print("stopping…", flush=True)
        return 0
    finally:
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
