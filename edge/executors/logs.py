"""Backend logs on the edge's disk: capped, rotated, removed after the backend ends, readable.

A process backend writes stdout and stderr straight into ``<dir>/<backend_id>.log`` (opened with
``O_APPEND``, so nothing of the edge sits between the backend and its file, and a backend that
outlives a killed edge keeps logging). Every :data:`~sync.timing.LOG_CHECK_S` the keeper rotates a
file that grew past ``max_bytes`` by *copy-then-truncate* (``.log`` → ``.log.1`` → … ``.log.N``,
``backups`` kept): the backend's appends continue at the new end of the truncated file. A log can
therefore exceed ``max_bytes`` by what its backend writes within one check, and a line written
between the copy and the truncation is lost. The keeper also removes the files of backends that
ended more than ``keep_s`` ago (by the time of the file's last write: the executor writes a closing
line when a backend ends), including those left by an earlier run of the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sync.timing import LOG_CHECK_S, LOG_FOLLOW_POLL_S

log = logging.getLogger(__name__)

MAX_TAIL_LINES = 10_000
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class LogPolicy:
    directory: Path
    max_bytes: int = 4 << 20
    backups: int = 1
    keep_s: float = 3600.0

    def path(self, backend_id: str) -> Path:
        """The current log file (``backend_id`` is checked by the executor: a safe file name)."""
        return self.directory / f"{backend_id}.log"

    def files(self, backend_id: str) -> list[Path]:
        """Oldest first: ``.log.N`` … ``.log.1``, ``.log``."""
        current = self.path(backend_id)
        backups = [current.with_name(f"{current.name}.{i}") for i in range(self.backups, 0, -1)]
        return [*backups, current]

    # ---- writing -----------------------------------------------------------------------------

    def open_for_child(self, backend_id: str, header: bytes) -> tuple[int, int]:
        """An ``O_APPEND`` descriptor on the backend's log (the caller closes it) and its offset."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(backend_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.write(fd, header)
        return fd, os.lseek(fd, 0, os.SEEK_CUR) - len(header)

    def rename(self, old_id: str, new_id: str) -> None:
        """A claimed warm-pool member's log goes under its backend's id (the child's descriptor
        keeps appending to the same file)."""
        for old, new in zip(self.files(old_id), self.files(new_id), strict=True):
            with contextlib.suppress(FileNotFoundError):
                os.replace(old, new)

    def append(self, backend_id: str, line: bytes) -> None:
        with contextlib.suppress(OSError):
            with open(self.path(backend_id), "ab") as f:
                f.write(line)

    def rotate_if_full(self, backend_id: str) -> bool:
        current = self.path(backend_id)
        try:
            if current.stat().st_size <= self.max_bytes:
                return False
            files = self.files(backend_id)
            for older, newer in itertools.pairwise(files[:-1]):  # .N-1 → .N, …, .1 → .2
                if newer.exists():
                    os.replace(newer, older)
            if self.backups:
                shutil.copyfile(current, files[-2])
            os.truncate(current, 0)
            return True
        except FileNotFoundError:
            return False

    def sweep(self, live: set[str], now: float | None = None) -> list[str]:
        """Remove the logs of backends not in ``live`` whose last write is older than ``keep_s``."""
        now = time.time() if now is None else now
        removed: list[str] = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return removed
        for entry in entries:
            backend_id = entry.name.split(".log", 1)[0]
            if ".log" not in entry.name or backend_id in live:
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime >= self.keep_s:
                    os.unlink(entry.path)
                    removed.append(backend_id)
        return sorted(set(removed))

    # ---- reading -----------------------------------------------------------------------------

    def exists(self, backend_id: str) -> bool:
        return any(p.exists() for p in self.files(backend_id))

    def tail(self, backend_id: str, lines: int) -> tuple[bytes, int]:
        """The last ``lines`` lines (across rotated files) and the current file's size."""
        want = max(0, min(lines, MAX_TAIL_LINES))
        chunks: list[bytes] = []
        count = 0
        size = 0
        for i, path in enumerate(reversed(self.files(backend_id))):
            try:
                with open(path, "rb") as f:
                    end = f.seek(0, os.SEEK_END)
                    if i == 0:
                        size = end
                    data = _read_last_lines(f, end, want - count)
            except FileNotFoundError:
                continue
            chunks.append(data)
            count += data.count(b"\n")
            if count >= want:
                break
        text = b"".join(reversed(chunks))
        if want == 0:
            return b"", size
        return b"".join(text.splitlines(keepends=True)[-want:]), size

    async def follow(self, backend_id: str, offset: int, still_running: Callable[[], bool]) -> AsyncIterator[bytes]:
        """What the backend appends from ``offset`` on, until it has ended and all was read.

        A file that shrank was rotated: reading goes on from its start.
        """
        path = self.path(backend_id)
        while True:
            running = still_running()
            data, offset = await asyncio.to_thread(_read_from, path, offset)
            if data:
                yield data
                continue
            if not running:
                return
            await asyncio.sleep(LOG_FOLLOW_POLL_S)


class LogKeeper:
    """The periodic task of one executor: rotate live backends' logs, sweep ended ones."""

    def __init__(self, policy: LogPolicy, live: Callable[[], set[str]]) -> None:
        self.policy = policy
        self._live = live
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="backend-logs")

    async def check(self) -> None:
        removed = await asyncio.to_thread(self._check, self._live())
        if removed:
            log.info("removed the logs of %d ended backend(s)", len(removed))

    def _check(self, live: set[str]) -> list[str]:
        """One pass in one worker thread: rotate every live log that is full, sweep the rest."""
        for backend_id in live:
            self.policy.rotate_if_full(backend_id)
        return self.policy.sweep(live)

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except OSError as exc:
                log.warning("backend log upkeep failed: %s", exc)
            await asyncio.sleep(LOG_CHECK_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _read_last_lines(f: BinaryIO, end: int, lines: int) -> bytes:
    """The end of an open binary file holding at least ``lines`` newlines (or the whole file)."""
    pos = end
    data = b""
    while pos > 0 and data.count(b"\n") <= lines:
        step = min(_CHUNK, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    return data


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:  # rotated (truncated) since we last read
                offset = 0
            f.seek(offset)
            data = f.read(_CHUNK)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)
