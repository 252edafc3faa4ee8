"""`meridian dev` as a user runs it: a banner with URLs and the admin token, then SIGTERM stops
every process it started (PostgreSQL, control plane, edges, backends)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from meridian.processes import clean_env
from sync.net import free_port_block


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.NoSuchProcess:
        return []


def test_dev_prints_its_cluster_serves_and_sigterm_leaves_no_process(tmp_path: Path) -> None:
    port = free_port_block(3)
    token = "dev-test-admin-token-0123"
    env = clean_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meridian",
            "dev",
            "--regions",
            "eu-west,ap-south",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--admin-token",
            token,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen: list[psutil.Process] = []
    try:
        banner = []
        for line in proc.stdout:  # type: ignore[union-attr]
            banner.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(banner)
        assert f"http://127.0.0.1:{port}" in text and token in text, text
        assert f"http://127.0.0.1:{port + 2}" in text and "ap-south" in text
        assert f"dashboard      http://127.0.0.1:{port}/ui/" in text
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"http://127.0.0.1:{port + 2}/v1/connect", json={"key": "dev", "template": "demo"}, headers=auth, timeout=30
        )
        assert r.status_code == 200, r.text
        assert r.json()["region"] == "ap-south"
        assert httpx.get(r.json()["url"], timeout=30).status_code == 200
        seen = _descendants(proc.pid)
        pidfile = tmp_path / "control" / "postgres" / "postmaster.pid"
        seen.append(psutil.Process(int(pidfile.read_text().split()[0])))  # daemonised: not a descendant
        assert len(seen) >= 5, "PostgreSQL, the control plane, two edges and a backend should be running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _, alive = psutil.wait_procs(seen, timeout=10)
    assert alive == [], f"left running: {[p.info if hasattr(p, 'info') else p.pid for p in alive]}"
