"""Idle WebSockets held through one edge: the edge's memory per idle proxied socket, and echo
latency among them.

    python -m bench.ws_idle [--sockets 10000] [--active 100] [--rate 1000] [--seconds 10]

One run: a dev cluster (embedded PostgreSQL, control plane, one edge) in a temp dir, one WebSocket
echo backend (bench/ws_backend.py) connected through the edge. The open-file limit is raised first
(this process and, inherited, the cluster's: the edge holds two descriptors per socket).

  rss        the edge's VmRSS (from /proc) after a warm-up of 100 proxied sockets, then with
             `--sockets` idle WebSockets open through it (raw clients: one handshake, then
             silence); per-socket = the difference / the sockets added.
  echo       with all of them open, `--active` of them send `--rate` messages/s in total (64-byte
             text frames, evenly spaced) for `--seconds`; round-trip p50/p99 through the edge, and
             directly to the backend at the same rate (the baseline, same run).

Prints JSON; every process it starts is stopped on exit, failure included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import machine_facts, summary_ms
from bench.edge_cluster import AUTH, dev_cluster, edge_pid, ready_backend

WS_TEMPLATE = {
    "executor": "process",
    "argv": [sys.executable, str(Path(__file__).resolve().parent / "ws_backend.py")],
    "idle_timeout_s": 3600,
}
OPEN_FILES = 65536
"""Wanted; a container without CAP_SYS_RESOURCE keeps its hard limit (the figure is reported)."""
PAYLOAD = b"x" * 64


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(OPEN_FILES, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_files_limit(pid: int) -> int:
    """The soft RLIMIT_NOFILE of another process (the edge raises its own at start)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError("no open-file limit")


class RawSocket:
    """A WebSocket client as small as can be: the handshake, then masked frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> RawSocket:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no upgrade: {head[:80]!r}")
        return cls(reader, writer)

    async def echo(self) -> float:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(PAYLOAD))
        t0 = time.perf_counter()
        self.writer.write(bytes((0x81, 0x80 | len(PAYLOAD))) + mask + masked)
        head = await self.reader.readexactly(2)
        await self.reader.readexactly(head[1] & 0x7F)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.writer.close()


async def open_many(host: str, port: int, path: str, n: int, batch: int = 250) -> list[RawSocket]:
    sockets: list[RawSocket] = []
    while len(sockets) < n:
        todo = min(batch, n - len(sockets))
        try:
            sockets += await asyncio.gather(*(RawSocket.open(host, port, path) for _ in range(todo)))
        except RuntimeError as exc:
            raise RuntimeError(f"after {len(sockets)} sockets: {exc}") from exc
    return sockets


async def echo_at_rate(sockets: list[RawSocket], rate: float, seconds: float) -> list[float]:
    """Each socket sends every len(sockets)/rate seconds (staggered): `rate` messages/s in all."""
    period = len(sockets) / rate
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def one(i: int, ws: RawSocket) -> None:
        await asyncio.sleep(period * i / len(sockets))
        next_at = time.monotonic()
        while next_at < end:
            latencies.append(await ws.echo())
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    return latencies


async def measure(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{cluster.control_url}/v1/templates/wsecho", json=WS_TEMPLATE, headers=AUTH) as r:
            assert r.status == 200, await r.text()
        answer = await ready_backend(session, cluster, "bench-ws-idle", template="wsecho")
    edge_port = int(cluster.edge_url(0).rsplit(":", 1)[1])
    token_path = f"/{answer['token']}/ws"
    direct_host, direct_port = answer["address"].rsplit(":", 1)
    pid = edge_pid(cluster)
    warm = await open_many("127.0.0.1", edge_port, token_path, 100)
    await asyncio.sleep(1)
    before = rss_kib(pid)
    t0 = time.perf_counter()
    idle = await open_many("127.0.0.1", edge_port, token_path, args.sockets)
    opened_s = time.perf_counter() - t0
    await asyncio.sleep(2)
    after = rss_kib(pid)
    edge_descriptors = descriptors(pid)
    active = (warm + idle)[: args.active]
    via_edge = await echo_at_rate(active, args.rate, args.seconds)
    direct = await open_many(direct_host, int(direct_port), "/ws", args.active)
    via_direct = await echo_at_rate(direct, args.rate, args.seconds)
    held = len(warm) + len(idle)
    for ws in warm + idle + direct:
        ws.close()
    per_socket = (after - before) * 1024 / args.sockets
    return {
        "idle_websockets_through_edge": held,
        "open_s": round(opened_s, 2),
        "edge_rss_kib_before": before,
        "edge_rss_kib_with_all_open": after,
        "edge_rss_bytes_per_idle_websocket": round(per_socket),
        "edge_descriptors_with_all_open": edge_descriptors,
        "edge_open_files_limit": open_files_limit(pid),
        "echo": {
            "active_sockets": args.active,
            "messages_per_s": args.rate,
            "seconds": args.seconds,
            "through_edge": summary_ms(via_edge) | {"messages": len(via_edge)},
            "direct": summary_ms(via_direct) | {"messages": len(via_direct)},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    limit = raise_open_files()
    with (
        tempfile.TemporaryDirectory(prefix="meridian-bench-ws-idle-") as tmp,
        dev_cluster(Path(tmp) / "dev") as cluster,
    ):
        result = asyncio.run(measure(cluster, args))
    result |= {
        "bench": "ws_idle",
        "open_files_limit": limit,
        "targets": {"edge_rss_bytes_per_idle_websocket": 8192, "echo_p99_ms": 2.0},
        **machine_facts(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
