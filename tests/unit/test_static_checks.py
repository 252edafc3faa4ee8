"""The code standards CI holds us to: ruff clean everywhere, mypy strict on every package, tests
included."""

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


def test_mypy_strict_everywhere() -> None:
    result = _run("mypy", "sync", "control", "edge", "meridian", "bench", "examples", "tests", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr
