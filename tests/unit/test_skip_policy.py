"""The skip policy: skips are shown, and under CI=true a skip that is not on ALLOWED_SKIPS fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALLOWED_SKIPS

REPO = Path(__file__).resolve().parents[2]

SAMPLE = """
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="the tool is missing")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    raise AssertionError
"""

MODULE_SKIP = """
import pytest
pytest.skip("no data here", allow_module_level=True)
"""


def run_pytest(tmp_path: Path, source: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_sample.py"
    test_file.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(test_file)],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_skip_outside_ci_is_shown_and_passes(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SAMPLE, ci=None)
    assert result.returncode == 0, result.stdout
    assert "SKIPPED" in result.stdout and "the tool is missing" in result.stdout


def test_an_unlisted_skip_fails_under_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SAMPLE, ci="true")
    assert result.returncode == 1, result.stdout
    assert "not on ALLOWED_SKIPS" in result.stdout and "the tool is missing" in result.stdout
    assert "1 passed" in result.stdout and "1 xfailed" in result.stdout  # xfail is not a skip


def test_a_skipped_module_fails_under_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, MODULE_SKIP, ci="true")
    assert result.returncode == 1, result.stdout
    assert "no data here" in result.stdout


@pytest.mark.parametrize("test_id", sorted(ALLOWED_SKIPS))
def test_every_allowed_skip_names_a_real_test_and_says_why(test_id: str) -> None:
    path, _, name = test_id.partition("::")
    assert f"def {name}(" in (REPO / path).read_text()
    assert len(ALLOWED_SKIPS[test_id]) > 20
