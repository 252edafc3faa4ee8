"""An OTLP endpoint that is down costs nothing visible: requests keep answering 200 (never waiting
on an export), the failure is logged once per exporter instead of per batch, and stopping is not
held up by the last export. The control plane and an edge run in this process on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from control.settings import ControlSettings
from sync.timing import TELEMETRY_SHUTDOWN_S
from tests.conftest import ADMIN_TOKEN, start_control, stop_control
from tests.integration.edge_support import ECHO, edge_url, running_edges

REQUEST_TIMEOUT_S = 5.0
"""Far below the exporter's timeout below: a request that waited on an export would fail."""
EXPORT_TIMEOUT_S = 30


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    """An endpoint nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers: each export waits for its timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.failing = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "export failing" in record.getMessage():
            self.failing.set()


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.mark.parametrize("endpoint", [closed_port, black_hole], ids=["closed-port", "black-hole"])
async def test_a_dead_otlp_endpoint_costs_requests_nothing_and_is_logged_once(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: _Records,
    endpoint: Callable[[], contextlib.AbstractContextManager[str]],
) -> None:
    with endpoint() as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(EXPORT_TIMEOUT_S))
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")
        control = await start_control(db_url, ControlSettings(port=0, admin_token=ADMIN_TOKEN))
        try:
            async with control.client() as admin:
                edge_token = (await admin.post("/v1/tokens", json={"name": "e", "scopes": ["edge"]})).json()["token"]
            async with running_edges(control, edge_token, tmp_path / "edges", ["eu-west"], {"echo": ECHO}) as edges:
                edge = edge_url(edges[0])
                auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, headers=auth) as c:
                    for i in range(20):
                        r = await c.post(f"{edge}/v1/connect", json={"key": f"k{i % 3}", "template": "echo"})
                        assert r.status_code == 200, r.text
                        assert (await c.get(f"{control.url}/healthz")).status_code == 200
                        assert (await c.get(r.json()["url"] + "ready")).status_code == 200
                        assert (await c.get(f"{edge}/metrics")).status_code == 200
                if endpoint is closed_port:  # a black hole fails only after the export timeout
                    assert await asyncio.to_thread(records.failing.wait, 30), "the outage was never reported"
                stopping = asyncio.get_running_loop().time()
        finally:
            await stop_control(control)
    # Both processes' shutdowns are bounded, whatever the exporter is stuck in (edge, then control).
    assert asyncio.get_running_loop().time() - stopping < 2 * TELEMETRY_SHUTDOWN_S + 10
    otel = [r for r in records.records if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]
    assert otel == [], [r.getMessage() for r in otel]
    failing = [r for r in records.records if "export failing" in r.getMessage()]
    assert len(failing) <= 4, "one line per exporter (spans and metrics, edge and control plane), not per batch"
