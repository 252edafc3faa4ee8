"""The replica's files: generations of a diskcache store, and the marker naming the live one.

    <dir>/CURRENT            "gen-000007": the version marker, replaced atomically (rename)
    <dir>/gen-000007/        diskcache.Cache(eviction_policy="none"): the live generation
        "!meta"          → {"applied_version": V, "epoch": E}
        "!page/000001"…  → the generation's base: objects written when it was made (a snapshot, or a
                           re-base of the memory image), 2,000 per entry, one line each:
                           "<kind>/<id>\t<canonical JSON>\n"
        "<kind>/<id>"    → the overlay: an object changed since the base (its canonical JSON), or
                           b"" when it was deleted since; it wins over the base

A reply is ONE diskcache transaction: its overlay entries and the new meta. A snapshot is written
into a fresh generation that nobody reads, made durable, and only then published by replacing
CURRENT; the old generation is deleted after. A crash mid-snapshot therefore leaves the previous
generation live, and a half-written one that the next open deletes. Base pages make writing a
snapshot cheap (one diskcache entry per 2,000 objects instead of one each: ~20 µs per entry).

Every method is blocking (sqlite) and must run on the replica's single disk thread: diskcache keeps
one sqlite connection per thread, and `close()` only closes the calling thread's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import diskcache
import orjson

from sync.models import ChangeKind

log = logging.getLogger(__name__)

MARKER = "CURRENT"
META_KEY = "!meta"
PAGE_PREFIX = "!page/"
TOMBSTONE = b""
_GENERATION = re.compile(r"^gen-(\d{6,})$")


class CorruptCache(Exception):
    """The cache directory cannot be trusted; it must be rebuilt from a snapshot."""


class DiskState(NamedTuple):
    applied_version: int
    epoch: str
    objects: dict[ChangeKind, dict[str, bytes]]


def disk_key(kind: ChangeKind, object_id: str) -> str:
    return f"{kind.value}/{object_id}"


def _open_cache(path: Path) -> diskcache.Cache:
    # cull_limit=0: with nothing to evict, skip the expiry scan diskcache runs on every write.
    # disk_min_file_size: keep every value (pages are ~1 MB) inside sqlite, whose WAL and
    # checkpoint make it durable, rather than in loose files diskcache never fsyncs.
    return diskcache.Cache(str(path), eviction_policy="none", cull_limit=0, disk_min_file_size=1 << 30)


def _meta(version: int, epoch: str) -> bytes:
    return orjson.dumps({"applied_version": version, "epoch": epoch})


class Generation:
    """A snapshot being written into a fresh generation, invisible until ReplicaDisk.publish()."""

    def __init__(self, number: int, path: Path) -> None:
        self.number = number
        self.path = path
        self.cache = _open_cache(path)
        self.pages = 0

    def write_page(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Add objects to the base, as one page (an id with a tab or newline gets its own entry)."""
        lines, loose = [], []
        for key, value in items:
            if "\t" in key or "\n" in key:
                loose.append((key, value))
            else:
                lines.append(key.encode() + b"\t" + value + b"\n")
        with self.cache.transact():
            if lines:
                self.pages += 1
                self.cache.set(f"{PAGE_PREFIX}{self.pages:06d}", b"".join(lines))
            for key, value in loose:
                self.cache.set(key, value)


class ReplicaDisk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._number = 0
        self._cache: diskcache.Cache | None = None
        self.overlay_entries = 0
        """Overlay writes since the base was made (an upper bound of the overlay's size)."""

    # ---- opening -------------------------------------------------------------------------------

    def load(self) -> DiskState | None:
        """The stored state; None for a new (empty) directory; CorruptCache when it cannot be trusted."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.exists():
            if self._generations():
                raise CorruptCache(f"{marker} is missing but generations exist")
            return None
        try:
            name = marker.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptCache(f"{marker} is unreadable: {exc}") from exc
        match = _GENERATION.match(name)
        if match is None or not (self.root / name).is_dir():
            raise CorruptCache(f"{marker} names no generation ({name[:40]!r})")
        try:
            state = self._read(self.root / name)
        except CorruptCache:
            raise
        except Exception as exc:  # sqlite errors, unpickling garbage, bad JSON: all mean "do not trust"
            raise CorruptCache(f"generation {name} is unreadable: {type(exc).__name__}: {exc}") from exc
        self._number = int(match.group(1))
        for number, path in self._generations():
            if number != self._number:  # a snapshot interrupted before it was published
                shutil.rmtree(path, ignore_errors=True)
        return state

    def _read(self, path: Path) -> DiskState:
        self._cache = _open_cache(path)
        raw_meta = self._cache.get(META_KEY)
        if not isinstance(raw_meta, bytes):
            raise CorruptCache("the generation has no version marker (meta)")
        meta = orjson.loads(raw_meta)
        if not isinstance(meta, dict):
            raise CorruptCache(f"unusable version marker {raw_meta[:80]!r}")
        version, epoch = meta.get("applied_version"), meta.get("epoch")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0 or not isinstance(epoch, str):
            raise CorruptCache(f"unusable version marker {raw_meta[:80]!r}")
        objects: dict[ChangeKind, dict[str, bytes]] = {kind: {} for kind in ChangeKind}
        overlay: list[tuple[str, bytes]] = []
        for key in self._cache:
            value = self._cache.get(key)
            if not isinstance(key, str) or not isinstance(value, bytes):
                raise CorruptCache(f"unexpected entry {key!r}")
            if key.startswith(PAGE_PREFIX):
                for line in value.split(b"\n")[:-1]:
                    object_key, tab, raw = line.partition(b"\t")
                    if not tab:
                        raise CorruptCache(f"malformed line in {key}")
                    _put(objects, object_key.decode(), raw)
            elif key != META_KEY:
                overlay.append((key, value))
        for key, value in overlay:
            _put(objects, key, value)
        self.overlay_entries = len(overlay)
        return DiskState(version, epoch, objects)

    def reset(self) -> None:
        """Forget everything (after corruption): the next snapshot starts a new lineage of generations."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            (self.root / MARKER).unlink()
        for _, path in self._generations():
            shutil.rmtree(path, ignore_errors=True)
        for stray in [*self.root.glob(MARKER + ".*"), *self.root.glob("gen-*")]:
            _remove(stray)

    def _generations(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.root.iterdir() if self.root.is_dir() else ():
            match = _GENERATION.match(path.name)
            if match is not None and path.is_dir():
                found.append((int(match.group(1)), path))
        return sorted(found)

    # ---- replies -------------------------------------------------------------------------------

    def write_changes(self, writes: list[tuple[str, bytes | None]], version: int, epoch: str) -> None:
        """One reply in ONE transaction: its objects (None deletes) and the new applied version."""
        if self._cache is None:
            raise RuntimeError("no live generation: a snapshot comes first")
        cache = self._cache
        with cache.transact():
            for key, value in writes:
                cache.set(key, TOMBSTONE if value is None else value)
            cache.set(META_KEY, _meta(version, epoch))
        self.overlay_entries += len(writes)

    # ---- snapshots -----------------------------------------------------------------------------

    def begin(self) -> Generation:
        number = max([self._number, *(n for n, _ in self._generations())]) + 1
        path = self.root / f"gen-{number:06d}"
        _remove(path)
        return Generation(number, path)

    def publish(self, gen: Generation, version: int, epoch: str) -> None:
        """Make `gen` durable, then live (atomic marker replace), then delete the previous generation."""
        gen.cache.set(META_KEY, _meta(version, epoch))
        gen.cache.close()  # the last connection's close checkpoints the WAL into the database file
        tmp = self.root / f"{MARKER}.{gen.number}"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(gen.path.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / MARKER)
        _fsync_dir(self.root)
        old, old_path = self._cache, self.root / f"gen-{self._number:06d}"
        self._cache, self._number = gen.cache, gen.number  # reconnects on its next use
        self.overlay_entries = 0
        if old is not None:
            old.close()
        if old_path != gen.path:
            shutil.rmtree(old_path, ignore_errors=True)

    def abort(self, gen: Generation) -> None:
        gen.cache.close()
        shutil.rmtree(gen.path, ignore_errors=True)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _remove(path: Path) -> None:
    """Whatever is at `path` (a directory tree, or a file where a generation should be) is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put(objects: dict[ChangeKind, dict[str, bytes]], key: str, value: bytes) -> None:
    kind, sep, object_id = key.partition("/")
    if not sep:
        raise CorruptCache(f"unexpected entry {key!r}")
    if value == TOMBSTONE:
        objects[ChangeKind(kind)].pop(object_id, None)
    else:
        objects[ChangeKind(kind)][object_id] = value
