"""The control plane keeps an idle kept-alive connection open longer than edges keep theirs, so an
edge never sends a request on a connection the server is closing (the race that made a burst's
heartbeats and long-polls fail with "server disconnected")."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from sync.net import free_port
from sync.timing import CONTROL_CLIENT_KEEPALIVE_S
from tests.conftest import ADMIN_TOKEN

UVICORN_DEFAULT_KEEPALIVE_S = 5.0


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: cp\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
    await asyncio.wait_for(reader.readexactly(length), 10)
    return head


async def test_an_idle_connection_outlives_uvicorns_default_keep_alive(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "meridian", "control", "serve", "--port", str(port),
            "--database-url", db_url, "--admin-token", ADMIN_TOKEN, "--data-dir", str(tmp_path)]  # fmt: skip
    quiet = asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(*argv, stdout=quiet, stderr=quiet)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.returncode is not None:
                    pytest.fail("the control plane did not start")
                await asyncio.sleep(0.05)  # another process starting: nothing to await across it
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
        # Idle past uvicorn's default (the subject here is the passage of time), still below the edges'.
        await asyncio.sleep(UVICORN_DEFAULT_KEEPALIVE_S + 1.0)
        assert UVICORN_DEFAULT_KEEPALIVE_S + 1.0 < CONTROL_CLIENT_KEEPALIVE_S
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200"), "the server closed an idle connection"
        writer.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
