"""A real dev cluster (embedded PostgreSQL, control plane, three edges: separate processes) shared
by the end-to-end tests of one module; every test uses its own keys."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.dev import DevCluster
from sync.net import free_port_block
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # re-exported for the browser tests here

__all__ = ["ADMIN", "CHROMIUM", "CHROMIUM_ARGS", "REGIONS", "npm"]

ADMIN = "e2e-admin-token-0123456789"
REGIONS = ["eu-west", "us-east", "ap-northeast"]
TS_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "typescript"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    dev = DevCluster(REGIONS, free_port_block(len(REGIONS) + 1), Path(tmp_path_factory.mktemp("dev")), ADMIN)
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()


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
