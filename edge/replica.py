"""The edge's replica of the replicated system state: on disk (diskcache, see replica_disk.py) for
durability, in memory for lookups.

Every object is validated into its model (sync/state.py) where it enters (a reply, a snapshot,
the disk at open) and held in memory as its canonical JSON (sorted keys), with small secondary
indexes (backends by node, revocations by backend, keys by backend). A lookup returns the
object's frozen model; the models of recently read objects are kept (a bounded memo), so the hot
objects of a busy edge are parsed once. The memory image is rebuilt from disk at open.
A directory that cannot be trusted (garbage in the sqlite file, a missing or unparseable version
marker, an entry that does not parse) is detected at open, wiped, and the replica starts empty:
the sync loop then takes a snapshot. It is never served half-read.

Writes go to disk on the replica's own single thread (diskcache is blocking sqlite), then to the
memory image on the event loop, so readers on the loop never see a half-applied reply:
- `apply_changes`: one diskcache transaction holding the reply's objects and its `to` version;
- `apply_snapshot`: a fresh generation written page by page while the stream is read, published
  atomically once the stream has been verified complete; a broken stream leaves the old state.

Listeners (`add_listener`) are called on the loop after each applied reply with its changes, and
after a snapshot with a SYNTHETIC list: the difference between the state before and after it
(an upsert per new or changed object, a delete per object gone), all with the snapshot's version.
So an edge reacts to the same things whether it learnt them by diff or by snapshot.

Terminated backends (and their revocations) are pruned TERMINATED_RETENTION_S after they ended,
as the control plane's snapshot leaves them out; keys stay (they carry fencing-token counters).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
from pydantic import ValidationError

from edge.replica_disk import CorruptCache, DiskState, Generation, ReplicaDisk, disk_key
from sync.client import SnapshotObject
from sync.models import Change, ChangeKind, ChangeOp, ChangesReply
from sync.state import (
    ApiTokenState,
    BackendState,
    KeyState,
    NodeState,
    RegionState,
    RevocationState,
    SigningKeyState,
    State,
    TemplateNameState,
    TemplateState,
    parse,
    parse_json,
)
from sync.timing import TERMINATED_RETENTION_S

log = logging.getLogger(__name__)

PAGE_OBJECTS = 2000
"""Objects per base page (one disk write) while a snapshot is written."""
REBASE_OVERLAY_MIN = 20_000
"""Re-base the disk store once its overlay holds this many entries and more than the state has objects."""
PRUNE_EVERY_S = 600.0
MEMO_OBJECTS = 8192
"""Parsed models kept for lookups; the memo is emptied when it outgrows this."""

Listener = Callable[[list[Change]], None]
T = TypeVar("T")
M = TypeVar("M", bound=State)


class InvalidObject(ValueError):
    """A replicated object that does not validate into its model."""


def _validated(kind: ChangeKind, object_id: str, body: dict[str, Any]) -> tuple[bytes, State]:
    """The object's model and canonical JSON; InvalidObject when it is not one."""
    try:
        state = parse(kind, body)
    except ValidationError as exc:
        raise InvalidObject(f"{kind} {object_id!r} is not valid: {exc.error_count()} error(s)") from exc
    if state.object_id != object_id:
        raise InvalidObject(f"{kind} {object_id!r} names itself {state.object_id!r}")
    # The copy matters: orjson's output keeps a ~4 KiB allocation behind every bytes object it
    # returns, which for 200,000 held objects is ~800 MB; an exact-size copy is ~450 bytes.
    return memoryview(state.canonical()).tobytes(), state


class _Index:
    """The memory image: canonical JSON per (kind, id), plus the secondary indexes lookups need."""

    def __init__(self) -> None:
        self.objects: dict[ChangeKind, dict[str, bytes]] = {kind: {} for kind in ChangeKind}
        self.backends_by_node: dict[str, set[str]] = {}
        self.revocations_by_backend: dict[str, set[str]] = {}
        self.terminated_at: dict[str, datetime] = {}  # terminated backend id → status_changed_at
        self._memo: dict[tuple[ChangeKind, str], State] = {}

    @classmethod
    def from_disk(cls, objects: dict[ChangeKind, dict[str, bytes]]) -> _Index:
        index = cls()
        for kind, items in objects.items():
            for object_id, raw in items.items():
                try:
                    state = parse_json(kind, raw)
                except ValidationError as exc:
                    raise CorruptCache(f"{kind} {object_id!r} does not validate") from exc
                index.put(state, raw)
        return index

    def put(self, state: State, raw: bytes) -> None:
        kind, object_id = state.KIND, state.object_id
        if isinstance(state, BackendState):
            self._unlink_backend(object_id)
            _link(self.backends_by_node, state.node_id, object_id)
            if state.is_terminated:
                self.terminated_at[object_id] = state.status_changed_at
        elif isinstance(state, RevocationState):
            self._unlink_revocation(object_id)
            _link(self.revocations_by_backend, state.backend_id, object_id)
        self.objects[kind][object_id] = raw
        self._memo[(kind, object_id)] = state

    def remove(self, kind: ChangeKind, object_id: str) -> None:
        if kind is ChangeKind.BACKEND:
            self._unlink_backend(object_id)
        elif kind is ChangeKind.REVOCATION:
            self._unlink_revocation(object_id)
        self.objects[kind].pop(object_id, None)
        self._memo.pop((kind, object_id), None)

    def get(self, kind: ChangeKind, object_id: str | None) -> State | None:
        if object_id is None:
            return None
        state = self._memo.get((kind, object_id))
        if state is not None:
            return state
        raw = self.objects[kind].get(object_id)
        if raw is None:
            return None
        state = parse_json(kind, raw)  # validated when it entered: this cannot fail
        if len(self._memo) >= MEMO_OBJECTS:
            self._memo.clear()
        self._memo[(kind, object_id)] = state
        return state

    def _unlink_backend(self, backend_id: str) -> None:
        old = self.get(ChangeKind.BACKEND, backend_id)
        if isinstance(old, BackendState):
            _unlink(self.backends_by_node, old.node_id, backend_id)
            self.terminated_at.pop(backend_id, None)

    def _unlink_revocation(self, revocation_id: str) -> None:
        old = self.get(ChangeKind.REVOCATION, revocation_id)
        if isinstance(old, RevocationState):
            _unlink(self.revocations_by_backend, old.backend_id, revocation_id)


def _link(index: dict[str, set[str]], owner: str, object_id: str) -> None:
    index.setdefault(owner, set()).add(object_id)


def _unlink(index: dict[str, set[str]], owner: str, object_id: str) -> None:
    if owner in index:
        index[owner].discard(object_id)
        if not index[owner]:
            del index[owner]


def _diff(before: _Index, after: _Index, version: int) -> list[Change]:
    """What a snapshot changed, as changes (the synthetic list listeners get after a snapshot)."""
    out: list[Change] = []
    for kind in ChangeKind:
        old, new = before.objects[kind], after.objects[kind]
        for object_id, raw in new.items():
            if old.get(object_id) != raw:
                out.append(
                    Change.model_construct(
                        version=version, kind=kind, id=object_id, op=ChangeOp.UPSERT, body=orjson.loads(raw)
                    )
                )
        for object_id in old.keys() - new.keys():
            out.append(Change.model_construct(version=version, kind=kind, id=object_id, op=ChangeOp.DELETE, body=None))
    return out


def _write_base(gen: Generation, index: _Index) -> int:
    """Write every object of the image into `gen`'s base pages; returns how many."""
    batch: list[tuple[str, bytes]] = []
    count = 0
    for kind, objects in index.objects.items():
        for object_id, raw in objects.items():
            batch.append((disk_key(kind, object_id), raw))
            if len(batch) >= PAGE_OBJECTS:
                gen.write_page(batch)
                count, batch = count + len(batch), []
    gen.write_page(batch)
    return count + len(batch)


class Replica:
    """Open with `Replica.open(directory)` (blocking: it reads the whole store); `close()` when done."""

    def __init__(self, disk: ReplicaDisk, executor: ThreadPoolExecutor, state: DiskState | None, index: _Index) -> None:
        self._disk = disk
        self._executor = executor
        self._index = index
        self._version = state.applied_version if state else None
        self._epoch = state.epoch if state else None
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        self._closed = False
        self.rebuilt = False
        """True when open() found the directory corrupt and started empty."""
        self.problem: str | None = None
        """Why the last disk operation failed (the edge reports itself unhealthy meanwhile); None when fine."""

    @classmethod
    def open(cls, directory: str | Path) -> Replica:
        disk = ReplicaDisk(Path(directory))
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-disk")

        def load() -> tuple[DiskState | None, _Index, bool, str | None]:
            try:
                state = disk.load()
                return state, _Index.from_disk(state.objects) if state else _Index(), False, None
            except Exception as exc:  # CorruptCache, or anything the image build tripped on
                log.error("replica in %s is corrupt (%s); starting empty, a snapshot will rebuild it", directory, exc)
            try:
                disk.reset()
            except OSError as exc:
                # Neither opened nor rebuilt (e.g. a file where the directory should be): the edge
                # still starts, serves what it can and reports itself unhealthy until a snapshot
                # can be written there again.
                problem = f"the replica directory {directory} cannot be opened or rebuilt: {exc}"[:400]
                log.error("%s", problem)
                return None, _Index(), True, problem
            return None, _Index(), True, None

        try:
            state, index, rebuilt, problem = executor.submit(load).result()
        except BaseException:
            executor.shutdown(wait=False)
            raise
        replica = cls(disk, executor, state, index)
        replica.rebuilt = rebuilt
        replica.problem = problem
        return replica

    def close(self) -> None:
        """Blocking; idempotent; the replica is unusable after."""
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.submit(self._disk.close).result()
        finally:
            self._executor.shutdown(wait=True)

    async def _on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))
        except Exception as exc:
            self.problem = f"the replica store failed: {type(exc).__name__}: {exc}"[:400]
            raise
        self.problem = None
        return result

    # ---- the ReplicaSink side (sync/loop.py) --------------------------------------------------

    @property
    def applied_version(self) -> int | None:
        return self._version

    @property
    def epoch(self) -> str | None:
        return self._epoch

    async def apply_changes(self, reply: ChangesReply) -> None:
        async with self._lock:
            if self._version is not None and reply.to <= self._version and not reply.changes:
                return  # an empty bookmark at our version: nothing to store
            staged: list[tuple[ChangeKind, str, bytes | None, State | None]] = []
            for change in reply.changes:
                if change.op is ChangeOp.UPSERT and change.body is not None:
                    staged.append((change.kind, change.id, *_validated(change.kind, change.id, change.body)))
                else:
                    staged.append((change.kind, change.id, None, None))
            pruned = self._prunable() if time.monotonic() >= self._next_prune else []
            writes = [(disk_key(kind, oid), raw) for kind, oid, raw, _ in staged]
            writes += [(disk_key(kind, oid), None) for kind, oid in pruned]
            await self._on_disk(self._disk.write_changes, writes, reply.to, reply.epoch)
            for kind, oid, raw, state in staged:
                if raw is None or state is None:
                    self._index.remove(kind, oid)
                else:
                    self._index.put(state, raw)
            for kind, oid in pruned:
                self._index.remove(kind, oid)
            if pruned or self._next_prune <= time.monotonic():
                self._next_prune = time.monotonic() + PRUNE_EVERY_S
            self._version, self._epoch = reply.to, reply.epoch
            if self._disk.overlay_entries > max(REBASE_OVERLAY_MIN, sum(map(len, self._index.objects.values()))):
                await self._rebase()
        if reply.changes:
            self._emit(list(reply.changes))

    async def apply_snapshot(self, epoch: str, version: int, objects: AsyncIterator[SnapshotObject]) -> None:
        async with self._lock:
            gen: Generation = await self._on_disk(self._disk.begin)
            fresh = _Index()
            try:
                batch: list[tuple[str, bytes]] = []
                writing: asyncio.Future[None] | None = None
                async for obj in objects:
                    raw, state = _validated(obj.kind, obj.id, obj.body)
                    fresh.put(state, raw)
                    batch.append((disk_key(obj.kind, obj.id), raw))
                    if len(batch) >= PAGE_OBJECTS:
                        if writing is not None:
                            await writing  # one page on disk while the next is parsed
                        writing = asyncio.ensure_future(self._on_disk(gen.write_page, batch))
                        batch = []
                if writing is not None:
                    await writing
                await self._on_disk(gen.write_page, batch)
                await self._on_disk(self._disk.publish, gen, version, epoch)
            except BaseException:
                # The disk thread runs jobs in order: this runs after any batch still being written.
                await asyncio.shield(self._on_disk(self._disk.abort, gen))
                raise
            before, self._index = self._index, fresh
            self._version, self._epoch = version, epoch
            # Off the loop (a first snapshot of 200,000 objects takes ~1 s to diff and parse); the
            # lock keeps the new image from changing meanwhile, and lookups only read it.
            changes = await asyncio.to_thread(_diff, before, fresh, version) if self._listeners else []
        if changes:
            self._emit(changes)

    async def _rebase(self) -> None:
        """Write the memory image as the base of a fresh generation, so the overlay (every object
        changed since the last snapshot, and a tombstone per deletion) does not grow without end.
        A failure is only logged: the current generation stays valid."""
        assert self._version is not None and self._epoch is not None
        gen: Generation = await self._on_disk(self._disk.begin)
        try:
            # On the disk thread, reading the image: the caller holds the lock, so it does not change.
            count = await self._on_disk(_write_base, gen, self._index)
            await self._on_disk(self._disk.publish, gen, self._version, self._epoch)
        except Exception:
            log.exception("replica: re-basing the disk store failed; keeping the current generation")
            await asyncio.shield(self._on_disk(self._disk.abort, gen))
            return
        log.info("replica: re-based the disk store at version %d (%d objects)", self._version, count)

    # ---- listeners ----------------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(changes)` after each applied reply (after a snapshot: the synthetic diff).
        Called on the event loop; keep it quick. Returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, changes: list[Change]) -> None:
        for callback in list(self._listeners):
            try:
                callback(changes)
            except Exception:
                log.exception("replica listener %r failed", callback)

    # ---- pruning ------------------------------------------------------------------------------

    def _prunable(self) -> list[tuple[ChangeKind, str]]:
        cutoff = datetime.now(UTC) - timedelta(seconds=TERMINATED_RETENTION_S)
        out: list[tuple[ChangeKind, str]] = []
        for backend_id, ended in self._index.terminated_at.items():
            if ended < cutoff:
                out.append((ChangeKind.BACKEND, backend_id))
                out += [(ChangeKind.REVOCATION, r) for r in self._index.revocations_by_backend.get(backend_id, ())]
        return out

    # ---- reads (all from memory; each returns a frozen model) -------------------------------

    def _typed(self, model: type[M], object_id: str | None) -> M | None:
        return cast(M | None, self._index.get(model.KIND, object_id))

    def backend(self, backend_id: str) -> BackendState | None:
        return self._typed(BackendState, backend_id)

    def backends_on_node(self, node_id: str) -> list[BackendState]:
        """Every backend the replica holds for the node, whatever its status."""
        ids = sorted(self._index.backends_by_node.get(node_id, ()))
        return [b for b in (self.backend(i) for i in ids) if b is not None]

    def key(self, key: str) -> KeyState | None:
        return self._typed(KeyState, key)

    def live_backend_for_key(self, key: str) -> BackendState | None:
        """The key's current backend when it is live (scheduled, starting or ready)."""
        row = self.key(key)
        backend = self.backend(row.backend_id) if row is not None and row.backend_id is not None else None
        return backend if backend is not None and backend.is_live else None

    def template(self, template_id: str) -> TemplateState | None:
        return self._typed(TemplateState, template_id)

    def template_by_name(self, name: str) -> TemplateState | None:
        """The template the name currently points at."""
        named = self._typed(TemplateNameState, name)
        return self.template(named.id) if named is not None else None

    def named_templates(self) -> list[TemplateState]:
        """The templates names point at now (not every version ever replicated)."""
        named = {n.id for n in self._all(TemplateNameState)}
        return [t for t in (self.template(i) for i in sorted(named)) if t is not None]

    def region(self, name: str) -> RegionState | None:
        return self._typed(RegionState, name)

    def regions(self) -> list[RegionState]:
        return self._all(RegionState)

    def node(self, node_id: str) -> NodeState | None:
        return self._typed(NodeState, node_id)

    def nodes(self) -> list[NodeState]:
        return self._all(NodeState)

    def signing_key(self, key_id: str) -> SigningKeyState | None:
        return self._typed(SigningKeyState, key_id)

    def signing_keys(self) -> list[SigningKeyState]:
        return self._all(SigningKeyState)

    def revocations(self, backend_id: str) -> list[RevocationState]:
        ids = sorted(self._index.revocations_by_backend.get(backend_id, ()))
        return [r for r in (self._typed(RevocationState, i) for i in ids) if r is not None]

    def api_token(self, token_hash: str) -> ApiTokenState | None:
        """An API token by the hex sha256 of its secret."""
        return self._typed(ApiTokenState, token_hash)

    def objects(self, kind: ChangeKind) -> dict[str, dict[str, Any]]:
        """Every object of a kind, by id, as its wire body (a full copy: for tests, tools and
        debugging, not hot paths)."""
        return {oid: orjson.loads(raw) for oid, raw in self._index.objects[kind].items()}

    def get(self, kind: ChangeKind, object_id: str) -> State | None:
        """One object of any kind by id (API tokens are held by the hex sha256 of the token)."""
        return self._index.get(kind, object_id)

    def count(self, kind: ChangeKind) -> int:
        return len(self._index.objects[kind])

    def _all(self, model: type[M]) -> list[M]:
        ids = sorted(self._index.objects[model.KIND])
        return [s for s in (self._typed(model, i) for i in ids) if s is not None]
