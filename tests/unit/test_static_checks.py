"""The code standards CI holds us to: ruff clean everywhere, mypy strict on the shared `sync/`
package and clean on the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_sync_and_clean_on_the_rest() -> None:
    result = _run("mypy", "sync", "control", "edge", "meridian")
    assert result.returncode == 0, result.stdout + result.stderr
