"""A real dev cluster (embedded PostgreSQL, control plane, three edges: separate processes) shared
by the end-to-end tests of one module; every test uses its own keys."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.dev import DevCluster
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # re-exported for the browser tests here
from tests.e2e.dev_api import ADMIN, running_cluster

__all__ = ["ADMIN", "CHROMIUM", "CHROMIUM_ARGS", "REGIONS", "npm"]

REGIONS = ["eu-west", "us-east", "ap-northeast"]
TS_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "typescript"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    with running_cluster(REGIONS, tmp_path_factory.mktemp("dev")) as dev:
        yield dev


def npm(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    npm_bin = shutil.which("npm")
    assert npm_bin, "npm is needed for the TypeScript client's tests"
    return subprocess.run(
        [npm_bin, *args, "--no-audit", "--no-fund"], cwd=TS_PACKAGE, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="session")
def built_package() -> Path:
    """`npm ci` from the committed package-lock.json, then the ESM build in dist/."""
    for step in (("ci",), ("run", "build")):
        result = npm(*step)
        assert result.returncode == 0, f"npm {' '.join(step)} failed:\n{result.stdout}\n{result.stderr}"
    return TS_PACKAGE
