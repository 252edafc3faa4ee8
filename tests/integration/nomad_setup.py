"""What every Nomad executor test shares: the images the HTTP double (``nomad_double.py``) can run,
template specs for them, and an executor pointed at the double (the fixtures `double` and
`recorder` are in ``conftest.py``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from edge.executors.base import ExitCallback
from edge.executors.nomad import NomadExecutor
from sync.models import TemplateSpec

from .nomad_double import NomadDouble

REPO = str(Path(__file__).resolve().parents[2])
DEMO_ARGV = [sys.executable, "-m", "meridian.demo"]
IMAGES = {
    "meridian/demo:test": DEMO_ARGV,
    "crash:3": [sys.executable, "-c", "import sys; sys.exit(3)"],
    "silent:1": [sys.executable, "-c", "import time; time.sleep(120)"],
}


def nomad_spec(image: str, **kw: object) -> TemplateSpec:
    return TemplateSpec(executor="nomad", image=image, env={"PYTHONPATH": REPO}, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def running_double(log_dir: Path) -> AsyncIterator[NomadDouble]:
    double = NomadDouble(IMAGES, log_dir=log_dir)
    await double.start()
    try:
        yield double
    finally:
        await double.close()


@asynccontextmanager
async def nomad_executor(
    double: NomadDouble, recorder: ExitCallback, *, monitor_interval_s: float
) -> AsyncIterator[NomadExecutor]:
    """An executor on the double polling fast (`monitor_interval_s`: how often it looks again
    when no blocking query tells it first)."""
    executor = NomadExecutor(
        recorder, address=double.url, grace_s=2.0, poll_interval_s=0.02, monitor_interval_s=monitor_interval_s
    )
    try:
        yield executor
    finally:
        await executor.close()
