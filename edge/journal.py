"""The edge's durable journal: what this node knows about the backends it runs, on its own disk.

One append-only file of JSON lines in `<data_dir>/journal/journal.jsonl`:

    {"t": "backend", "seq": N, "replay": bool, "backend": {...BackendState}, "spec": {...TemplateSpec}}
    {"t": "process", "id": "bk-…", "pid": P, "address": "host:port", "pool_member"?: "wp-…"}
    {"t": "status",  "seq": N, "replay": bool, "report": {...StatusReport}}
    {"t": "ack",     "upto": N}

`backend` is written when this node starts a backend (an offline spawn: `replay` true, the
control plane does not know it yet), `process` once it is ready (what an edge restarted after
SIGKILL needs to adopt it), `status` on every status change (`replay` true while the control plane
is unreachable), `ack` when the control plane took the replayed entries up to `upto`.
Pending entries — the ones to replay — are the `replay` ones above the last ack.

Every append is written and fsynced before it is confirmed (appends waiting at the same time share
one fsync). A torn last line (a crash mid-write) is dropped at open. The file is rewritten
(compacted: live backends and pending entries only) at open once it holds many dead lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from sync.models import BackendStatus, StatusReport, TemplateSpec
from sync.offline import JournalEntry, OfflineSpawn
from sync.state import BackendState

log = logging.getLogger(__name__)

FILE_NAME = "journal.jsonl"
COMPACT_ABOVE_LINES = 10_000


@dataclass
class JournaledBackend:
    """One backend as the journal knows it: its record, its template, its process, its last status."""

    backend: BackendState
    spec: TemplateSpec
    pid: int | None = None
    address: str | None = None
    pool_member: str | None = None
    """The warm-pool member whose process it is (found by MERIDIAN_POOL_MEMBER when adopting)."""
    last: StatusReport | None = None
    seq: int = 0
    last_seq: int = 0

    @property
    def status(self) -> BackendStatus:
        return self.last.status if self.last is not None else self.backend.status

    @property
    def ended(self) -> bool:
        return self.status is BackendStatus.TERMINATED


@dataclass
class _Image:
    """The journal's content, folded: what open() rebuilds and every append keeps current."""

    backends: dict[str, JournaledBackend] = field(default_factory=dict)
    pending: dict[int, JournalEntry] = field(default_factory=dict)
    acked: int = 0
    seq: int = 0
    lines: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # key → greatest fencing token journaled

    def fold(self, record: dict[str, Any]) -> None:
        self.lines += 1
        kind = record.get("t")
        if kind == "backend":
            backend = BackendState.model_validate(record["backend"])
            entry = JournaledBackend(backend, TemplateSpec.model_validate(record["spec"]), seq=int(record["seq"]))
            self.backends[backend.id] = entry
            if backend.key is not None:
                self.tokens[backend.key] = max(self.tokens.get(backend.key, 0), backend.fencing_token)
            self._sequenced(record, spawn=_spawn_of(backend))
        elif kind == "process":
            known = self.backends.get(record["id"])
            if known is not None:
                known.pid, known.address = record.get("pid"), record.get("address")
                known.pool_member = record.get("pool_member")
        elif kind == "status":
            report = StatusReport.model_validate(record["report"])
            known = self.backends.get(report.id)
            if known is not None:
                known.last, known.last_seq = report, int(record["seq"])
                known.address = report.address or known.address
            self._sequenced(record, report=report)
        elif kind == "ack":
            self.acked = max(self.acked, int(record["upto"]))
            self.pending = {s: e for s, e in self.pending.items() if s > self.acked}
        else:
            raise ValueError(f"unknown journal record {kind!r}")

    def _sequenced(
        self, record: dict[str, Any], *, spawn: OfflineSpawn | None = None, report: StatusReport | None = None
    ) -> None:
        seq = int(record["seq"])
        self.seq = max(self.seq, seq)
        if record.get("replay") and seq > self.acked:
            self.pending[seq] = JournalEntry(seq=seq, spawn=spawn, report=report)


def _spawn_of(backend: BackendState) -> OfflineSpawn:
    return OfflineSpawn(
        id=backend.id,
        key=backend.key,
        template_name=backend.template_name,
        template_id=backend.template_id,
        region=backend.region,
        node_id=backend.node_id,
        fencing_token=backend.fencing_token,
        secret=backend.secret,
        owner_token_id=backend.owner_token_id,
        user_id=backend.user_id,
        created_at=backend.created_at,
    )


class Journal:
    """Open with `Journal.open(directory)` (blocking); `close()` when done. Appends are coroutines
    that return once the record is on disk."""

    def __init__(self, path: Path, image: _Image) -> None:
        self.path = path
        self._image = image
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-disk")
        self._file = open(path, "ab")
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @classmethod
    def open(cls, directory: str | Path) -> Journal:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        path = root / FILE_NAME
        image = _read(path)
        if image.lines > COMPACT_ABOVE_LINES:
            image = _compact(path, image)
        return cls(path, image)

    def close(self) -> None:
        """Blocking; what was confirmed is on disk already."""
        self._disk.shutdown(wait=True)
        self._file.close()

    # ---- reading ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Entries the control plane has not taken yet."""
        return len(self._image.pending)

    def pending_entries(self, limit: int) -> list[JournalEntry]:
        return [self._image.pending[s] for s in sorted(self._image.pending)[:limit]]

    def backends(self) -> list[JournaledBackend]:
        return list(self._image.backends.values())

    def backend(self, backend_id: str) -> JournaledBackend | None:
        return self._image.backends.get(backend_id)

    def greatest_token(self, key: str) -> int:
        """The greatest fencing token this node journaled for `key` (0 when none)."""
        return self._image.tokens.get(key, 0)

    async def wait_pending(self) -> None:
        """Return once there is something to replay."""
        while not self._image.pending:
            self._changed.clear()
            await self._changed.wait()

    # ---- appending ----------------------------------------------------------------------------

    async def record_backend(self, backend: BackendState, spec: TemplateSpec, *, replay: bool) -> None:
        await self._append(
            {"t": "backend", "seq": self._next(), "replay": replay, "backend": backend.body(), "spec": _json(spec)}
        )

    async def record_process(
        self, backend_id: str, pid: int | None, address: str, *, pool_member: str | None = None
    ) -> None:
        record: dict[str, Any] = {"t": "process", "id": backend_id, "pid": pid, "address": address}
        if pool_member is not None:
            record["pool_member"] = pool_member
        await self._append(record)

    async def record_status(self, report: StatusReport, *, replay: bool) -> None:
        if report.id not in self._image.backends:
            return  # not a backend this journal knows (e.g. one marked lost before it ever ran here)
        await self._append({"t": "status", "seq": self._next(), "replay": replay, "report": _json(report)})

    async def ack(self, upto: int) -> None:
        if upto > self._image.acked:
            await self._append({"t": "ack", "upto": upto})

    def _next(self) -> int:
        self._image.seq += 1
        return self._image.seq

    async def _append(self, record: dict[str, Any]) -> None:
        # Folded first, so readers see it at once; confirmed to the caller only once it is durable.
        self._image.fold(record)
        self._changed.set()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((orjson.dumps(record) + b"\n", done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="journal-flush")
        await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.get_running_loop().run_in_executor(self._disk, self._write, [b for b, _ in batch])
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else OSError("journal write cancelled"))
                raise
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, lines: Iterable[bytes]) -> None:
        self._file.write(b"".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())


def _json(model: TemplateSpec | StatusReport) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _read(path: Path) -> _Image:
    image = _Image()
    if not path.exists():
        return image
    data = path.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn by a crash mid-write: never confirmed, so never answered
        try:
            image.fold(orjson.loads(line))
        except (orjson.JSONDecodeError, ValidationError, ValueError, KeyError, TypeError) as exc:
            log.error("journal %s: unreadable line %d (%s); keeping what came before it", path, image.lines, exc)
            break
        good += len(line)
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return image


def _backend_of(entry: JournalEntry) -> str:
    if entry.spawn is not None:
        return entry.spawn.id
    assert entry.report is not None
    return entry.report.id


def _compact(path: Path, image: _Image) -> _Image:
    """Rewrite the file with what still matters: backends not ended, and pending entries (each
    line keeps its sequence number, so pending entries stay pending and acks stay valid)."""
    keep = {b.backend.id for b in image.backends.values() if not b.ended}
    keep |= {_backend_of(e) for e in image.pending.values()}
    records: list[tuple[int, dict[str, Any]]] = []
    for known in image.backends.values():
        if known.backend.id not in keep:
            continue
        bid = known.backend.id
        records.append(
            (
                known.seq,
                {
                    "t": "backend",
                    "seq": known.seq,
                    "replay": known.seq in image.pending,
                    "backend": known.backend.body(),
                    "spec": _json(known.spec),
                },
            )
        )
        if known.address is not None:
            process: dict[str, Any] = {"t": "process", "id": bid, "pid": known.pid, "address": known.address}
            if known.pool_member is not None:
                process["pool_member"] = known.pool_member
            records.append((known.seq, process))
        if known.last is not None and known.last_seq not in image.pending:
            report = {"t": "status", "seq": known.last_seq, "replay": False, "report": _json(known.last)}
            records.append((known.last_seq, report))
    for seq, entry in image.pending.items():
        if entry.report is not None:
            records.append((seq, {"t": "status", "seq": seq, "replay": True, "report": _json(entry.report)}))
    records.sort(key=lambda r: (r[0], r[1]["t"] != "backend"))
    lines = [orjson.dumps(r) + b"\n" for _, r in records]
    lines.append(orjson.dumps({"t": "ack", "upto": image.acked}) + b"\n")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fresh = _read(path)
    fresh.seq = max(fresh.seq, image.seq)
    return fresh
