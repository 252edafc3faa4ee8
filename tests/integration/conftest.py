"""Fixtures the executor tests share: an executor's exit recorder, the beacon backends report to,
and the Nomad HTTP double."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .nomad_double import NomadDouble
from .nomad_setup import running_double
from .test_process_executor import Beacon, Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def beacon() -> AsyncIterator[Beacon]:
    b = Beacon()
    await b.start()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def double(tmp_path: Path) -> AsyncIterator[NomadDouble]:
    async with running_double(tmp_path / "allocs") as d:
        yield d
