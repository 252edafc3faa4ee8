"""Helpers of the sync tests: an edge (replica directory + sync loop) in the test process, and the
control plane's state read from a snapshot to compare replicas against."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from edge.replica import Replica
from sync.backoff import Backoff
from sync.client import ClientTimeouts, SyncClient
from sync.loop import SyncLoop
from sync.models import ChangeKind

State = dict[str, dict[str, dict[str, Any]]]


def fast_backoff() -> Backoff:
    return Backoff(0.01, 0.1)


@dataclass
class Edge:
    """One edge's sync machinery, restartable on the same cache directory."""

    directory: Path
    url: str
    token: str
    wait_s: float = 10.0
    timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    replica: Replica | None = None
    client: SyncClient | None = None
    loop: SyncLoop | None = None
    snapshots: int = 0  # over every run of the loop, restarts included

    async def start(self) -> Edge:
        self.replica = await asyncio.to_thread(Replica.open, self.directory)
        self.client = SyncClient(self.url, self.token, timeouts=self.timeouts)
        self.loop = SyncLoop(self.client, self.replica, wait_s=self.wait_s, backoff=fast_backoff())
        self.loop.start()
        return self

    async def stop(self) -> None:
        if self.loop is not None:
            await self.loop.stop()
            self.snapshots += self.loop.snapshots
        if self.client is not None:
            await self.client.close()
        if self.replica is not None:
            await asyncio.to_thread(self.replica.close)
        self.loop = self.client = self.replica = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def caught_up(self, version: int, timeout_s: float = 20.0) -> None:
        assert self.loop is not None
        await asyncio.wait_for(self.loop.wait_applied(version), timeout_s)

    def state(self) -> State:
        assert self.replica is not None
        return replica_state(self.replica)


def replica_state(replica: Replica) -> State:
    return {kind.value: replica.objects(kind) for kind in ChangeKind}


async def snapshot_state(url: str, token: str) -> tuple[int, str, State]:
    """The control plane's replicated state, read through its snapshot endpoint."""
    state: State = {kind.value: {} for kind in ChangeKind}
    async with SyncClient(url, token) as client, client.snapshot() as snap:
        async for obj in snap.objects():
            state[obj.kind.value][obj.id] = obj.body
        return snap.version, snap.epoch, state


async def current_version(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT version FROM system_version"))
    finally:
        await conn.close()


def diff_states(a: State, b: State) -> list[str]:
    """Human-readable differences (empty when equal)."""
    out = []
    for kind in sorted(set(a) | set(b)):
        left, right = a.get(kind, {}), b.get(kind, {})
        for oid in sorted(set(left) | set(right)):
            if left.get(oid) != right.get(oid):
                out.append(f"{kind} {oid}: {left.get(oid)!r} != {right.get(oid)!r}")
    return out
