"""The Python client (`meridian.client`) against a real dev cluster: connect, wait_ready (with a
stream broken mid-way and resumed), terminate, error mapping. Retries: test_python_client_retry.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from meridian.client import AsyncMeridian, Meridian, RetryPolicy
from meridian.dev import DevCluster
from sync.errors import BackendGone, BadRequest, KeyHeld, NotFound, TemplateUnknown, Unauthorized
from tests.e2e.conftest import ADMIN

SSE_EVENT_ID = re.compile(rb"(^|\n)id: \d+\n")
FAST_RETRY = RetryPolicy(attempts=12, initial_s=0.05, max_s=0.5)

# A backend that only starts serving once its gate file exists: the test decides when it is ready.
GATED = (
    "import pathlib, runpy, sys, time\n"
    "gate = pathlib.Path(sys.argv[1])\n"
    "while not gate.exists():\n"
    "    time.sleep(0.02)\n"
    "sys.argv = ['meridian.demo']\n"
    "runpy.run_module('meridian.demo', run_name='__main__')\n"
)


def test_connect_wait_ready_and_terminate_with_the_sync_client(cluster: DevCluster) -> None:
    with Meridian(cluster.edge_url(0), ADMIN) as api:
        conn = api.connect("py-client-sync", "demo")
        assert conn.backend_id.startswith("bk-") and conn.key == "py-client-sync" and conn.fencing_token >= 1
        assert conn.url.startswith(cluster.edge_url(0)) and conn.placement.region == "eu-west"
        ready = api.wait_ready(conn, timeout=30)
        assert ready.status == "ready" and ready.id == conn.backend_id
        assert conn.backend_id in httpx.get(conn.url, timeout=10).text
        again = api.connect("py-client-sync", "demo")
        assert again.backend_id == conn.backend_id and not again.spawned
    with Meridian(cluster.control_url, ADMIN) as api:
        listed = api.backends(key="py-client-sync")
        assert [b.id for b in listed] == [conn.backend_id] and listed[0].status == "ready"
        stopped = api.terminate(conn, hard=True)
        assert stopped.id == conn.backend_id and stopped.status in ("draining", "terminated")
        with pytest.raises(BackendGone) as gone:
            api.wait_ready(conn, timeout=30)
        assert gone.value.fields["status"] in ("draining", "terminated")


async def test_connect_wait_ready_and_terminate_with_the_async_client(cluster: DevCluster) -> None:
    async with AsyncMeridian(cluster.control_url, ADMIN) as api:
        conn = await api.connect("py-client-async", "demo", location=(40.7, -74.0))
        assert conn.placement.region == "us-east" and conn.placement.reason == "location"
        assert (await api.wait_ready(conn, timeout=30)).status == "ready"
        assert (await api.backend(conn)).status == "ready"
        await api.terminate(conn)
        events = [e async for e in api.events(conn)]  # the stream ends after `terminated`
        assert [e.status for e in events][-1] == "terminated" and "ready" in [e.status for e in events]
        assert [e.id for e in events] == sorted({e.id for e in events})
        # resuming after an event gives exactly the later ones
        later = [e async for e in api.events(conn, last_event_id=events[1].id)]
        assert later == events[2:]


class StreamBreaker:
    """A loopback TCP relay in front of the control plane that can cut every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.heads: list[bytes] = []
        self.events_seen = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            self.cut()
            await server.wait_closed()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self.events_seen.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if upstream:
                        self.heads.append(data)
                    elif SSE_EVENT_ID.search(data):
                        self.events_seen.set()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


async def test_wait_ready_resumes_a_broken_stream_with_last_event_id(cluster: DevCluster, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with AsyncMeridian(cluster.control_url, ADMIN) as admin:
        await admin.put_template("gated", {"executor": "process", "argv": [sys.executable, "-c", GATED, str(gate)]})
        conn = await admin.connect("py-client-resume", "gated", region="eu-west")
    breaker = StreamBreaker(cluster.port)
    async with breaker.running() as relay_url, AsyncMeridian(relay_url, ADMIN, retry=FAST_RETRY) as api:
        waiting = asyncio.create_task(api.wait_ready(conn.backend_id, timeout=60))  # by id: through the relay
        await asyncio.wait_for(breaker.events_seen.wait(), 30)  # the backend is not ready: it waits for the gate
        first_stream_requests = len(breaker.heads)
        breaker.cut()
        gate.touch()
        ready = await waiting
    assert ready.status == "ready" and ready.id == conn.backend_id
    resumed = [h for h in breaker.heads[first_stream_requests:] if b"/events" in h]
    assert resumed, "wait_ready did not open the stream again"
    assert b"last-event-id: " in resumed[0].lower(), resumed[0]
    last_id = int(resumed[0].lower().split(b"last-event-id: ")[1].split(b"\r\n")[0])
    async with AsyncMeridian(cluster.control_url, ADMIN) as admin:
        await admin.terminate(conn, hard=True)
        history = [e async for e in admin.events(conn)]
    before_ready = [e.id for e in history[: [e.status for e in history].index("ready")]]
    assert last_id == before_ready[-1], (last_id, history)  # resumed right after the last event it had seen


def test_error_answers_become_the_typed_errors(cluster: DevCluster) -> None:
    with Meridian(cluster.control_url, ADMIN) as api:
        with pytest.raises(TemplateUnknown):
            api.connect("py-client-err", "no-such-template")
        with pytest.raises(BadRequest) as bad:
            api.connect("bad\x00key", "demo")
        assert bad.value.status == 400 and bad.value.fields
        with pytest.raises(NotFound):
            api.backend("bk-doesnotexist")
        api.put_template("demo-other", {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"]})
        api.connect("py-client-held", "demo")
        with pytest.raises(KeyHeld):
            api.connect("py-client-held", "demo-other")
    with Meridian(cluster.control_url, "not-a-real-token-0123456789") as stranger, pytest.raises(Unauthorized):
        stranger.regions()
