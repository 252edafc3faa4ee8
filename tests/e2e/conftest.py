"""A real dev cluster (embedded PostgreSQL, control plane, three edges: separate processes) shared
by the end-to-end tests of one module; every test uses its own keys."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.dev import DevCluster

ADMIN = "e2e-admin-token-0123456789"
REGIONS = ["eu-west", "us-east", "ap-northeast"]


def _free_block(n: int) -> int:
    """A base port with the next n ports free too."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n >= 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    dev = DevCluster(REGIONS, _free_block(len(REGIONS) + 1), Path(tmp_path_factory.mktemp("dev")), ADMIN)
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
