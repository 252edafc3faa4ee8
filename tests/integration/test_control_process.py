"""`meridian control serve` as a real process with its embedded PostgreSQL, killed with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from meridian.dev import control_plane_argv
from meridian.processes import clean_env
from sync.net import free_port

TOKEN = "process-admin-token-0123456789"


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        control_plane_argv(port, data_dir, TOKEN), env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"control plane exited: {stderr[-2000:]}")
        try:
            r = httpx.get(f"{url}/healthz", timeout=1)
            if r.status_code == 200:
                health: dict[str, Any] = r.json()
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a process we do not own: no event to await
    raise AssertionError("control plane did not become healthy")


def _postgres_pids(data_dir: Path) -> list[int]:
    pidfile = data_dir / "postgres" / "postmaster.pid"
    return [int(pidfile.read_text().split()[0])] if pidfile.exists() else []


def test_restart_after_sigkill_reuses_the_running_postgres_and_keeps_every_row(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    proc = _start(tmp_path, port)
    try:
        _wait_healthy(proc, url)
        r = httpx.put(
            f"{url}/v1/regions/eu-west", headers=auth, json={"lat": 53.35, "lon": -6.26, "edge_url": "http://eu.test"}
        )
        assert r.status_code == 200, r.text
        version = httpx.get(f"{url}/healthz").json()["version"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        pg = _postgres_pids(tmp_path)
        assert pg and psutil.pid_exists(pg[0]), "PostgreSQL should outlive a SIGKILLed control plane"

        proc = _start(tmp_path, port)
        health = _wait_healthy(proc, url)
        assert health["version"] == version
        regions = httpx.get(f"{url}/v1/regions", headers=auth).json()
        assert [r["name"] for r in regions] == ["eu-west"]
        assert _postgres_pids(tmp_path) == pg, "the running PostgreSQL is adopted, not replaced"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # a clean stop also stops the embedded PostgreSQL it manages
    for pid in pg:
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(pid)
