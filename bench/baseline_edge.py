"""A baseline for A/B runs of bench/proxy.py: a whole dev cluster (embedded PostgreSQL, control
plane, one edge) of another commit, or of any command, next to the current one — a cluster of its
own, so an older edge talks to the control plane it was written for (the protocol moves). Its
edge serves a backend of the same kind, and takes turns with the current edge under the same wrk
load.

    --baseline-commit REV   `git archive REV` into a temp dir and run its `meridian dev` with this
                            venv's Python (PYTHONPATH = that tree: its control/, edge/, sync/)
    --baseline-cmd CMD      any command starting such a cluster; {python} {port} {data_dir}
                            {admin_token} are filled in (control plane on {port}, edge on {port}+1)
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import ADMIN_TOKEN, wait_http
from meridian import processes
from sync.net import free_port_block

DEV = "{python} -m meridian dev --regions eu-west --port {port} --data-dir {data_dir} --admin-token {admin_token}"
"""The baseline cluster: the control plane on {port}, its one edge (eu-west) on {port}+1."""


@dataclass(frozen=True)
class BaselineCluster:
    control_url: str
    edge_url: str
    label: str
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def export_commit(repo: Path, rev: str, into: Path) -> tuple[Path, str]:
    """The tree of `rev` in `into` (nothing of the working tree); (that directory, the full sha)."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), sha], cwd=repo, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree, sha


@contextlib.contextmanager
def baseline_cluster(work: Path, *, commit: str | None, command: str | None) -> Iterator[BaselineCluster]:
    """The baseline cluster, its edge answering; every process of it stopped on exit."""
    env = processes.clean_env()
    cwd = None
    label = command or ""
    if commit is not None:
        tree, sha = export_commit(Path(__file__).resolve().parents[1], commit, work)
        env["PYTHONPATH"] = str(tree)
        cwd, label, command = tree, f"commit {sha[:12]}", DEV
    assert command is not None
    port = free_port_block(2)
    fields = {"python": sys.executable, "port": port, "data_dir": work / "baseline-dev", "admin_token": ADMIN_TOKEN}
    argv = shlex.split(command.format(**{k: shlex.quote(str(v)) for k, v in fields.items()}))
    log = work / "baseline.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    cluster = BaselineCluster(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}", label, log)
    try:
        wait_http(f"{cluster.edge_url}/v1/edge/status", timeout_s=120, proc=proc)
        yield cluster
    finally:
        processes.stop(proc)
