"""A real dev cluster (embedded PostgreSQL, control plane, three edges: separate processes) shared
by the end-to-end tests of one module; every test uses its own keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.dev import DevCluster, free_port_block

ADMIN = "e2e-admin-token-0123456789"
REGIONS = ["eu-west", "us-east", "ap-northeast"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    dev = DevCluster(REGIONS, free_port_block(len(REGIONS) + 1), Path(tmp_path_factory.mktemp("dev")), ADMIN)
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
