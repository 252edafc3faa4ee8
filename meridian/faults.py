"""Faults injected into a dev cluster by killing its real processes (tests and bench/outage.py):
SIGKILL a component and start it again with the same command line, and count the backend
processes of a key by their environment (processes, not rows)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from meridian import processes
from meridian.dev import DevCluster, DevError


def _index(cluster: DevCluster, name: str) -> int:
    for i, (proc_name, _) in enumerate(cluster.procs):
        if proc_name == name:
            return i
    raise DevError(f"no process named {name!r} in the cluster")


def kill(cluster: DevCluster, name: str) -> None:
    """SIGKILL one component (only its main process: a control plane's PostgreSQL, an edge's
    backends live on, as they would after a crash)."""
    proc = cluster.procs[_index(cluster, name)][1]
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def stop(cluster: DevCluster, name: str, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> int:
    """Signal one component (a clean stop, or SIGUSR2 for an edge that leaves its backends running)
    and wait for it to exit; its exit code."""
    proc = cluster.procs[_index(cluster, name)][1]
    proc.send_signal(sig)
    return proc.wait(timeout_s)


def argv(cluster: DevCluster, name: str) -> list[str]:
    """The command line the component runs with now."""
    return [str(a) for a in cluster.procs[_index(cluster, name)][1].args]  # type: ignore[union-attr]


def restart(
    cluster: DevCluster, name: str, ready_url: str, timeout_s: float = 60, *, command: list[str] | None = None
) -> float:
    """Start the (stopped) component again with its command line (or `command`); seconds until
    `ready_url` answers 200."""
    i = _index(cluster, name)
    old = cluster.procs[i][1]
    if old.poll() is None:
        raise DevError(f"{name} is still running")
    log = cluster.data_dir / "logs" / (("control" if name == "control plane" else name.replace(" ", "-")) + ".log")
    started = time.monotonic()
    proc = processes.start(command or argv(cluster, name), log, processes.clean_env())
    cluster.procs[i] = (name, proc)
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevError(f"{name} exited with code {proc.returncode} after a restart")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise DevError(f"{name} did not answer at {ready_url} within {timeout_s:.0f}s of a restart")


def backend_processes(key: str, under: Path) -> list[int]:
    """Pids of the backend processes (group leaders) serving `key`, found by MERIDIAN_KEY, whose
    output goes to a file under `under` (a cluster's data dir): another cluster on the same machine,
    with keys of the same names, is not counted."""
    wanted = f"MERIDIAN_KEY={key}".encode()
    root = under.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            pid = int(entry.name)
            if wanted not in environ or b"MERIDIAN_BACKEND_ID=" not in b"\0".join(environ):
                continue
            if os.getpgid(pid) == pid and Path(os.readlink(entry / "fd" / "1")).is_relative_to(root):
                found.append(pid)
        except (OSError, ValueError):
            continue
    return sorted(found)


def kill_backends(keys: list[str], under: Path) -> None:
    """SIGKILL every backend process group of these keys under `under` (cleanup after a test left orphans)."""
    for key in keys:
        for pid in backend_processes(key, under):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
