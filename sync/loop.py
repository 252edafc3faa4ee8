"""The edge's sync loop: snapshot when the replica has nothing, then long-poll changes from its cursor.

Each reply is checked before it is applied: it must start at the replica's cursor (`from`), carry
the replica's epoch, and hold versions in order within (`from`, `to`]. Anything else is a gap: the
loop drops the reply and re-snapshots, as it does on 410 `snapshot_required`. Failures back off with
full jitter (0.5 s → 30 s); the replica keeps its last good state throughout.

`reachable` is False after a transport failure or a 5xx answer (the control plane cannot serve us)
and True after any other answer; `last_sync_at` is when the last reply (or snapshot) was applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Protocol

from sync.backoff import Backoff
from sync.client import SnapshotObject, SyncClient
from sync.errors import MeridianError, SnapshotRequired, TooManyRequests
from sync.models import ChangeOp, ChangesReply
from sync.timing import SYNC_LONG_POLL_S

log = logging.getLogger(__name__)


class ReplicaSink(Protocol):
    """What the loop applies replies to (edge/replica.py implements it)."""

    @property
    def applied_version(self) -> int | None:
        """The version the replica holds; None when it holds nothing (it needs a snapshot)."""

    @property
    def epoch(self) -> str | None:
        """The epoch of the database the replica's state came from."""

    async def apply_snapshot(self, epoch: str, version: int, objects: AsyncIterator[SnapshotObject]) -> None:
        """Replace the whole state, atomically, once `objects` is exhausted (it raises on a bad stream)."""

    async def apply_changes(self, reply: ChangesReply) -> None:
        """Apply one checked reply atomically, and move `applied_version` to `reply.to`."""


def reply_problem(reply: ChangesReply, cursor: int, epoch: str | None) -> str | None:
    """Why the reply cannot be applied on top of `cursor` (a gap), or None when it can."""
    if reply.epoch != epoch:
        return f"epoch changed from {epoch!r} to {reply.epoch!r}"
    if reply.from_ != cursor:
        return f"reply starts at version {reply.from_}, the replica is at {cursor}"
    if reply.to < reply.from_:
        return f"reply goes back from {reply.from_} to {reply.to}"
    last = reply.from_
    for change in reply.changes:
        if not last <= change.version <= reply.to or change.version == reply.from_:
            return f"change of version {change.version} out of order in ({reply.from_}, {reply.to}]"
        if change.op is ChangeOp.UPSERT and change.body is None:
            return f"upsert of {change.kind} {change.id!r} without a body"
        last = change.version
    return None


class SyncLoop:
    def __init__(
        self,
        client: SyncClient,
        sink: ReplicaSink,
        *,
        wait_s: float = SYNC_LONG_POLL_S,
        backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._sink = sink
        self._wait_s = wait_s
        self._backoff = backoff or Backoff()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.reachable = False
        """Whether the last exchange with the control plane got a usable answer."""
        self.last_sync_at: datetime | None = None
        """When the last reply or snapshot was applied (UTC)."""
        self.last_error: str | None = None
        self.snapshots = 0
        """Snapshots applied since the loop was made."""
        self.replies = 0
        """Changes replies applied since the loop was made."""
        self.resyncs = 0
        """Times a gap, an epoch change or a 410 sent the loop back to a snapshot."""
        self.failures = 0
        """Failed attempts (each followed by a backoff)."""
        self._nudged = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="sync-loop")
        return self._task

    async def stop(self) -> None:
        """Cancel the loop and wait for it; a reply being applied is either applied or not, never half."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def nudge(self) -> None:
        """Cut the current backoff short: something else (a heartbeat) just reached the control plane."""
        self._nudged.set()

    async def wait_applied(self, version: int) -> None:
        """Return once the replica holds `version` or later."""
        async with self._changed:
            await self._changed.wait_for(lambda: (self._sink.applied_version or 0) >= version)

    async def wait_until(self, predicate: Callable[[SyncLoop], bool]) -> None:
        """Return once `predicate(loop)` holds; it is checked after every applied reply, failure and
        reachability change (e.g. `lambda loop: not loop.reachable` to switch to offline behaviour)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        need_snapshot = self._sink.applied_version is None
        streak = 0  # re-snapshots in a row without a reply applied in between
        while True:
            try:
                if need_snapshot:
                    if streak > 1:  # a snapshot did not get us going: do not hammer the server
                        await asyncio.sleep(self._backoff.next_delay())
                    await self._snapshot()
                    need_snapshot = False
                if await self._changes():
                    streak = 0
                else:
                    need_snapshot, streak = True, streak + 1
            except SnapshotRequired as exc:
                await self._set_reachable(True)
                log.info("sync: %s; taking a snapshot", exc.message)
                self.resyncs += 1
                need_snapshot, streak = True, streak + 1
            except TooManyRequests as exc:
                await self._set_reachable(True)
                await self._fail(exc, exc.retry_after_s or 0.0)
            except MeridianError as exc:
                await self._set_reachable(exc.status < 500)
                await self._fail(exc, exc.retry_after_s or 0.0)
            except Exception as exc:  # e.g. the disk under the replica: keep the loop alive, retry later
                log.exception("sync: applying a reply failed")
                await self._fail(exc, 0.0)

    async def _changes(self) -> bool:
        """One long-poll; False when the reply shows a gap (the caller re-snapshots)."""
        cursor = self._sink.applied_version
        assert cursor is not None
        # While the control plane counts as unreachable, ask without waiting: an idle state would
        # otherwise hold the first poll after an outage for a whole long-poll before we knew.
        reply = await self._client.changes(cursor, self._wait_s if self.reachable else 0)
        await self._set_reachable(True)
        problem = reply_problem(reply, cursor, self._sink.epoch)
        if problem is not None:
            log.warning("sync: %s; dropping the reply and taking a snapshot", problem)
            self.resyncs += 1
            return False
        await self._sink.apply_changes(reply)
        self.replies += 1
        await self._synced()
        return True

    async def _snapshot(self) -> None:
        async with self._client.snapshot() as snap:
            await self._set_reachable(True)
            await self._sink.apply_snapshot(snap.epoch, snap.version, snap.objects())
        self.snapshots += 1
        log.info("sync: applied a snapshot of version %d (%d objects)", snap.version, snap.count)
        await self._synced()

    async def _set_reachable(self, reachable: bool) -> None:
        if reachable is not self.reachable:
            self.reachable = reachable
            log.log(
                logging.INFO if reachable else logging.WARNING,
                "sync: control plane %s",
                "reachable" if reachable else "unreachable",
            )
            async with self._changed:
                self._changed.notify_all()

    async def _synced(self) -> None:
        self.last_sync_at = datetime.now(UTC)
        self.last_error = None
        self._backoff.reset()
        async with self._changed:
            self._changed.notify_all()

    async def _fail(self, exc: Exception, at_least_s: float) -> None:
        delay = self._backoff.next_delay(at_least_s)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        log.warning("sync: %s; retrying in %.2fs", self.last_error, delay)
        async with self._changed:
            self._changed.notify_all()
        self._nudged.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._nudged.wait()
