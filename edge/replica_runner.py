"""A bare edge replica process: the sync loop into a replica directory, reporting on stdout.

    python -m edge.replica_runner --control URL --token T --dir DIR [--wait 25] [--snapshot-only]

Prints one JSON object per line:
    {"event": "ready", "pid": P, "applied_version": V | null}            after opening the replica
    {"event": "applied", "version": V, "t": UNIX_TIME, "apply_ms": X}    after each applied reply
    {"event": "snapshot", "version": V, "count": N, "seconds": S, "peak_rss_mb": M}   --snapshot-only
`t` is wall-clock time (comparable across processes on one machine), taken when the reply is
applied and visible to lookups. Used by bench/sync_propagation.py; stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge.replica import Replica
from sync.client import SnapshotObject, SyncClient
from sync.loop import SyncLoop
from sync.models import ChangesReply


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class _Reporting:
    """The replica, reporting each applied reply (a ReplicaSink)."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    @property
    def applied_version(self) -> int | None:
        return self._replica.applied_version

    @property
    def epoch(self) -> str | None:
        return self._replica.epoch

    async def apply_snapshot(self, epoch: str, version: int, objects: AsyncIterator[SnapshotObject]) -> None:
        started = time.perf_counter()
        await self._replica.apply_snapshot(epoch, version, objects)
        emit("applied", version=version, t=time.time(), apply_ms=(time.perf_counter() - started) * 1000, snapshot=True)

    async def apply_changes(self, reply: ChangesReply) -> None:
        started = time.perf_counter()
        await self._replica.apply_changes(reply)
        if reply.changes:
            emit("applied", version=reply.to, t=time.time(), apply_ms=(time.perf_counter() - started) * 1000)


async def _snapshot_only(client: SyncClient, replica: Replica) -> None:
    started = time.perf_counter()
    async with client.snapshot() as snap:
        await replica.apply_snapshot(snap.epoch, snap.version, snap.objects())
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit("snapshot", version=snap.version, count=snap.count, seconds=seconds, peak_rss_mb=peak_kb / 1024)


async def main_async(args: argparse.Namespace) -> None:
    replica = await asyncio.to_thread(Replica.open, Path(args.dir))
    emit("ready", pid=os.getpid(), applied_version=replica.applied_version)
    client = SyncClient(args.control, args.token)
    try:
        if args.snapshot_only:
            await _snapshot_only(client, replica)
            return
        loop = SyncLoop(client, _Reporting(replica), wait_s=args.wait)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        loop.start()
        await stop.wait()
        await loop.stop()
    finally:
        await client.close()
        await asyncio.to_thread(replica.close)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control", required=True, help="Control plane base URL.")
    parser.add_argument("--token", required=True, help="API token with the edge scope.")
    parser.add_argument("--dir", required=True, help="Replica cache directory.")
    parser.add_argument("--wait", type=float, default=25.0, help="Long-poll wait, seconds.")
    parser.add_argument("--snapshot-only", action="store_true", help="Apply one snapshot, report, exit.")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
