"""bench/proxy.py's A/B baseline runs the edge of another commit from that commit's tree alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.baseline_edge import DEV, export_commit

REPO = Path(__file__).resolve().parents[2]


def test_a_commit_is_exported_with_its_own_edge(tmp_path: Path) -> None:
    first = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    tree, sha = export_commit(REPO, "HEAD", tmp_path)
    assert (tree / "edge" / "fastpath.py").read_text() == subprocess.run(
        ["git", "show", f"{sha}:edge/fastpath.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    old, old_sha = export_commit(REPO, first, tmp_path / "first")
    assert old_sha == first and not (old / "edge" / "fastpath.py").exists()


def test_the_cluster_command_takes_every_field() -> None:
    fields = {"python": "py", "port": 1, "data_dir": "d", "admin_token": "t"}
    assert DEV.format(**fields).split()[:4] == ["py", "-m", "meridian", "dev"]
