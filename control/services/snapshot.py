"""`GET /v1/sync/snapshot`: the whole replicated state at one version, streamed as NDJSON.

The state is read in ONE repeatable-read, read-only transaction (so every row belongs to the version
read first in it), table by table through server-side cursors, `page_size` rows at a time, and
sent as it is read: it is never built whole in memory. The stream is

    {"epoch": ..., "version": ..., "kinds": [...]}      first line
    {"kind": ..., "id": ..., "body": {...}}             one line per object
    {"end": true, "count": N}                           last line: a truncated stream is detectable

Each body is the object's model (sync/state.py), exactly as the change log carries it.
Backends: live and draining ones, plus those terminated within TERMINATED_RETENTION_S (an hour),
so the snapshot stays small while an edge that re-snapshots still learns of recent terminations;
revocations follow their backends. Every other kind is sent whole (keys included: edges need each
key's fencing-token counter even after its backend ended).

Admission control: at most `limit` snapshots are streamed at once; beyond that the caller gets
429 `too_many_requests` with Retry-After, so a control-plane restart does not cause a resync storm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import partial

import asyncpg
import orjson
from asyncpg.cursor import CursorFactory
from asyncpg.pool import PoolConnectionProxy

from control.db import Conn
from control.queries import (
    api_tokens,
    backends,
    edge_nodes,
    keys,
    regions,
    signing_keys,
    system_version,
    template_names,
    templates,
    token_revocations,
)
from sync.errors import TooManyRequests
from sync.models import ChangeKind
from sync.state import STATE_MODELS
from sync.timing import TERMINATED_RETENTION_S

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_AFTER_S = 2.0
"""Retry-After of a refused snapshot; clients add their own jittered backoff on top."""


@dataclass(frozen=True)
class _Source:
    kind: ChangeKind
    cursor: Callable[[Conn], CursorFactory]


_SOURCES = (
    _Source(ChangeKind.REGION, regions.snapshot),
    _Source(ChangeKind.NODE, edge_nodes.snapshot),
    _Source(ChangeKind.TEMPLATE, templates.snapshot),
    _Source(ChangeKind.TEMPLATE_NAME, template_names.snapshot),
    _Source(ChangeKind.SIGNING_KEY, signing_keys.snapshot),
    _Source(ChangeKind.BACKEND, partial(backends.snapshot, terminated_retention_s=TERMINATED_RETENTION_S)),
    _Source(ChangeKind.KEY, keys.snapshot),
    _Source(ChangeKind.API_TOKEN, api_tokens.snapshot),
    _Source(
        ChangeKind.REVOCATION,
        partial(token_revocations.snapshot, terminated_retention_s=TERMINATED_RETENTION_S),
    ),
)
SNAPSHOT_KINDS = tuple(s.kind for s in _SOURCES)


class SnapshotAdmission:
    """Counts snapshots in flight; refuses more than `limit` at once."""

    def __init__(self, limit: int, retry_after_s: float = SNAPSHOT_RETRY_AFTER_S) -> None:
        self.limit = limit
        self.active = 0
        self._retry_after_s = retry_after_s
        self.idle = asyncio.Event()
        """Set while no snapshot is being served."""
        self.idle.set()

    def admit(self) -> Callable[[], None]:
        """Take a slot or raise TooManyRequests; returns the (idempotent) release function."""
        if self.active >= self.limit:
            raise TooManyRequests(
                f"{self.active} snapshots are being served; retry later",
                fields={"limit": self.limit},
                retry_after_s=self._retry_after_s,
            )
        self.active += 1
        self.idle.clear()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1
                if self.active == 0:
                    self.idle.set()

        return release


class SnapshotStream:
    """One snapshot: holds a pooled connection and its transaction from `open` to `close`."""

    def __init__(self, pool: asyncpg.Pool, page_size: int) -> None:
        self._pool = pool
        self._page_size = page_size
        self._conn: PoolConnectionProxy | None = None
        self._tx: asyncpg.transaction.Transaction | None = None
        self.epoch = ""
        self.version = 0

    async def open(self) -> None:
        """Start the transaction and read the version (so database errors surface before any byte is sent)."""
        self._conn = await self._pool.acquire()
        try:
            self._tx = self._conn.transaction(isolation="repeatable_read", readonly=True)
            await self._tx.start()
            head = await system_version.read(self._conn)
        except BaseException:
            await self.close()
            raise
        self.epoch, self.version = head["epoch"], head["version"]

    async def lines(self) -> AsyncGenerator[bytes, None]:
        """The NDJSON stream, one chunk per page of rows."""
        assert self._conn is not None, "open() first"
        yield orjson.dumps({"epoch": self.epoch, "version": self.version, "kinds": list(SNAPSHOT_KINDS)}) + b"\n"
        count = 0
        for source in _SOURCES:
            cursor = await source.cursor(self._conn)
            while rows := await cursor.fetch(self._page_size):
                count += len(rows)
                yield b"".join(_line(source, row) for row in rows)
        yield orjson.dumps({"end": True, "count": count}) + b"\n"

    async def close(self) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None:
            return
        try:
            if tx is not None and not conn.is_closed():
                await tx.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("snapshot: could not end its transaction cleanly (%s)", exc)
        finally:
            await self._pool.release(conn)


def _line(source: _Source, row: asyncpg.Record) -> bytes:
    state = STATE_MODELS[source.kind].model_validate(dict(row))
    return orjson.dumps({"kind": source.kind, "id": state.object_id, "body": state.body()}) + b"\n"
