"""Edges in the test's event loop (one per region, registered and synced), and raw-socket HTTP
for tests where the bytes on the wire matter."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import h11

from edge import keys
from edge.app import EdgeServer, send_heartbeat, start_edge
from edge.settings import EdgeSettings
from tests.conftest import ADMIN_TOKEN, RunningControl

ECHO_BACKEND = str(Path(__file__).resolve().parents[1] / "backends" / "echo_backend.py")
ECHO = {"executor": "process", "argv": [sys.executable, ECHO_BACKEND]}
EDGE_DOMAIN = "edge.test"


from sync.net import free_port as free_port  # noqa: E402  (re-exported: the one helper)


@contextlib.asynccontextmanager
async def running_edges(
    control: RunningControl,
    edge_token: str,
    data_dir: Path,
    regions: list[str],
    templates: dict[str, dict[str, Any]],
    **settings: Any,
) -> AsyncIterator[list[EdgeServer]]:
    async with control.client() as admin:
        for name, spec in templates.items():
            r = await admin.put(f"/v1/templates/{name}", json=spec)
            assert r.status_code == 200, r.text
    settings.setdefault("edge_domain", EDGE_DOMAIN)
    started: list[EdgeServer] = []
    try:
        for region in regions:
            edge = await start_edge(
                EdgeSettings(
                    region=region,
                    control_url=control.url,
                    token=edge_token,
                    port=free_port(),
                    data_dir=data_dir / region,
                    **settings,
                )
            )
            started.append(edge)
            await send_heartbeat(edge.app)
        async with control.client() as admin:
            version = (await admin.get("/healthz")).json()["version"]
        for edge in started:
            await asyncio.wait_for(edge.app[keys.SYNC_LOOP].wait_applied(version), 30)
        yield started
    finally:
        for edge in reversed(started):
            await edge.stop()


def edge_url(edge: EdgeServer) -> str:
    return f"http://127.0.0.1:{edge.port}"


async def connect(edge: EdgeServer, key: str, template: str = "echo", **body: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{edge_url(edge)}/v1/connect", json={"key": key, "template": template, **body}, headers=headers
        ) as r:
            answer = await r.json()
            assert r.status == 200, answer
            result: dict[str, Any] = answer
            return result


async def wait_ready(answer: dict[str, Any]) -> None:
    """The first request waits (at the edge) for the backend to start."""
    async with aiohttp.ClientSession() as s, s.get(answer["url"] + "ready") as r:
        assert r.status == 200, await r.text()


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    informational: list[int]

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name.lower()), None)


class RawConnection:
    """One client connection that writes exact bytes and reads responses with h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head_request: bool = False, within_s: float = 30) -> RawResponse:
        """The next response; the h11 state machine is told a request went out, since the raw
        bytes did not pass through it."""
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        method = b"HEAD" if head_request else b"GET"
        self.h11.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        self.h11.send(h11.EndOfMessage())
        informational: list[int] = []
        status, headers, body = 0, [], bytearray()
        async with asyncio.timeout(within_s):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await self.reader.read(65536)
                    self.h11.receive_data(data)
                    if not data and self.h11.their_state is not h11.DONE:
                        raise ConnectionError("the edge closed the connection before a full response")
                    continue
                if isinstance(event, h11.InformationalResponse):
                    informational.append(event.status_code)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = [(n.decode(), v.decode()) for n, v in event.headers]
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return RawResponse(status, headers, bytes(body), informational)
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("connection closed")

    async def closed_within(self, seconds: float) -> bool:
        """True when the edge closes the connection within that many seconds."""
        try:
            async with asyncio.timeout(seconds):
                while await self.reader.read(65536):
                    pass
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
