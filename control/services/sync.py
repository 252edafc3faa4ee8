"""`GET /v1/sync/changes`: pages of the change log, and the long-poll that waits for the next one.

Reads are shared. A page is identified by (`since`, the version the notifier knew when the read
began); every request asking for the same page while it is being read, or within `cache_ttl_s`
after, gets the same result and the same serialized bytes (one `bytes` object, handed as is to every
response). So when N edges wait on version V and the version moves, the notifier wakes all N, and
ONE query reads the new change rows for all of them; a waiter at an older cursor is served from the
recent pages (at most `cache_entries`) or by one read per distinct cursor. A caller whose cursor is
the head a read just confirmed waits without reading again: the database is read once per version,
however many edges wait.

A page holds whole versions only: it is cut at a version boundary to respect `page_limit`
(a single version larger than the limit is sent whole, alone), and `more` says that more follows.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from control.db import Conn
from control.notifier import VersionNotifier
from control.queries import changes, system_version
from sync.errors import SnapshotRequired
from sync.timing import SYNC_FALLBACK_POLL_S

log = logging.getLogger(__name__)

MAX_WAIT_S = 60.0
"""Longest long-poll a client may ask for."""


@dataclass(frozen=True)
class Page:
    """One reply of the changes endpoint, serialized once and shared by every caller asking for it."""

    epoch: str
    since: int
    to: int
    count: int
    more: bool
    body: bytes

    @functools.cached_property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ASGI response headers of this reply, built once like its body."""
        return [
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
            (b"content-length", str(len(self.body)).encode()),
        ]

    @property
    def advances(self) -> bool:
        """True when the reply moves the caller's cursor (changes, or a bookmark past `since`)."""
        return self.to > self.since


def _page(epoch: str, since: int, to: int, rows: list[asyncpg.Record], more: bool) -> Page:
    reply: dict[str, Any] = {
        "epoch": epoch,
        "from": since,
        "to": to,
        "changes": [
            {"version": r["version"], "kind": r["kind"], "id": r["id"], "op": r["op"], "body": r["body"]} for r in rows
        ],
        "more": more,
    }
    return Page(epoch=epoch, since=since, to=to, count=len(rows), more=more, body=orjson.dumps(reply))


async def read_page(conn: Conn, since: int, page_limit: int) -> Page:
    """One consistent read (repeatable read) of the changes after `since`, cut at a version boundary.

    Raises SnapshotRequired when `since` is below the compaction floor (the rows are gone) or above
    the current version (the database went back in time, e.g. a restore): either way the caller
    must start again from a snapshot.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await system_version.read(conn)
        current, epoch, floor = head["version"], head["epoch"], head["floor_version"]
        if since < floor:
            raise SnapshotRequired(
                f"versions up to {floor} were compacted; take a snapshot",
                fields={"since": since, "floor": floor, "version": current},
            )
        if since > current:
            raise SnapshotRequired(
                f"version {since} is ahead of this control plane's version {current}; take a snapshot",
                fields={"since": since, "version": current},
            )
        rows = await changes.after(conn, since, current, page_limit + 1)
        if len(rows) <= page_limit:
            return _page(epoch, since, current, rows, more=False)
        cut = rows[page_limit]["version"]  # the first version that did not fit
        whole = [r for r in rows if r["version"] < cut]
        if not whole:  # one version larger than the limit: send it whole, alone
            whole = await changes.of_version(conn, cut)
        to = whole[-1]["version"]
        return _page(epoch, since, to, whole, more=to < current)


class ChangeFeed:
    """Shared, de-duplicated reads of change pages, and the long-poll on top of them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        notifier: VersionNotifier,
        page_limit: int,
        *,
        cache_ttl_s: float = 1.0,
        cache_entries: int = 64,
    ) -> None:
        self._pool = pool
        self._notifier = notifier
        self._page_limit = page_limit
        self._ttl_s = cache_ttl_s
        self._max_entries = cache_entries
        self._pages: OrderedDict[tuple[int, int], tuple[float, asyncio.Task[Page]]] = OrderedDict()
        self._waiting = 0
        self._head = (-1, 0.0)
        """(the version a read found current, until when that is trusted): a caller there waits at once.
        Trusted for `cache_ttl_s` only, so a database restored to an earlier version is seen as soon
        as by a read."""
        self._watchers: list[tuple[Callable[[int], bool], asyncio.Future[None]]] = []
        self.reads = 0
        """Database reads of change pages so far (the sharing is observable through it)."""

    @property
    def waiting(self) -> int:
        """Long-polls currently blocked waiting for a new version."""
        return self._waiting

    async def wait_for_waiting(self, ready: Callable[[int], bool]) -> None:
        """Return once `ready(number of blocked long-polls)` holds (for tests and diagnostics)."""
        if ready(self._waiting):
            return
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((ready, watcher))
        try:
            await watcher
        finally:
            self._watchers = [w for w in self._watchers if w[1] is not watcher]

    async def page(self, since: int, known: int) -> Page:
        """The page after `since`, read at or after the notifier knew version `known`; shared."""
        key = (since, known)
        now = time.monotonic()
        entry = self._pages.get(key)
        if entry is None or entry[0] < now:
            entry = (now + self._ttl_s, asyncio.create_task(self._read(since), name=f"changes-after-{since}"))
            entry[1].add_done_callback(functools.partial(self._settle, key))
            self._pages[key] = entry
            while len(self._pages) > self._max_entries:
                self._pages.popitem(last=False)
        self._pages.move_to_end(key)
        # shield: a caller that goes away must not cancel the read the others share.
        return await asyncio.shield(entry[1])

    async def long_poll(self, since: int, wait_s: float) -> Page:
        """The next page after `since`; when there is none, wait up to `wait_s` for one.

        Woken by the version notifier (LISTEN/NOTIFY; its fallback poll is only a safety net). A
        timeout answers an empty page whose `to` is the current version.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_s, MAX_WAIT_S)
        while True:
            known = self._notifier.latest
            remaining = deadline - loop.time()
            head, trusted_until = self._head
            if since == known == head and remaining > 0 and loop.time() < trusted_until:
                # Nothing after `since` exists yet, and a read since the last version confirmed that
                # `since` is valid: wait without another read (a timeout ends with one, below).
                await self._wait_beyond(since, remaining)
                continue
            page = await self.page(since, known)
            remaining = deadline - loop.time()
            if page.advances or page.count or remaining <= 0:
                return page
            if page.to < known:
                # The database is behind what the notifier saw (restored to an earlier version):
                # notifications of its new versions do not wake us, so re-read at the fallback pace.
                await asyncio.sleep(min(remaining, SYNC_FALLBACK_POLL_S))
                continue
            await self._wait_beyond(max(known, since), remaining)

    async def _wait_beyond(self, version: int, timeout_s: float) -> None:
        self._set_waiting(+1)
        try:
            await self._notifier.wait_beyond(version, timeout_s)
        finally:
            self._set_waiting(-1)

    def _set_waiting(self, delta: int) -> None:
        self._waiting += delta
        for ready, watcher in self._watchers:
            if not watcher.done() and ready(self._waiting):
                watcher.set_result(None)

    async def _read(self, since: int) -> Page:
        self.reads += 1
        async with self._pool.acquire() as conn:
            page = await read_page(conn, since, self._page_limit)
        if not page.more:
            self._head = (page.to, asyncio.get_running_loop().time() + self._ttl_s)
        return page

    def _settle(self, key: tuple[int, int], task: asyncio.Task[Page]) -> None:
        """A failed read is not cached (the next caller retries); its error is consumed here."""
        if task.cancelled() or task.exception() is not None:
            entry = self._pages.get(key)
            if entry is not None and entry[1] is task:
                del self._pages[key]

    def close(self) -> None:
        for _, task in self._pages.values():
            task.cancel()
        self._pages.clear()
