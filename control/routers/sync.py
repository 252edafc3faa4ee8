"""Sync endpoints: `GET /v1/sync/changes` (long-poll) and `GET /v1/sync/snapshot` (NDJSON stream)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from control.http.deps import EdgeCaller, State
from control.services.snapshot import SnapshotStream
from control.services.sync import MAX_WAIT_S, Page
from control.services.sync_runtime import SyncRuntime
from sync.validation import INT63_MAX

router = APIRouter(prefix="/v1/sync")


def _runtime(request: Request) -> SyncRuntime:
    runtime: SyncRuntime = request.app.state.sync
    return runtime


@router.get("/changes")
async def changes(
    request: Request,
    state: State,
    caller: EdgeCaller,
    since: Annotated[int, Query(ge=0, le=INT63_MAX, description="The caller's applied version.")],
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for a change.")] = 0.0,
) -> Response:
    """Changes after `since`, whole versions only; waits up to `wait` seconds when there are none.

    `{epoch, from, to, changes: [{version, kind, id, op, body}], more}`; an empty reply still carries
    `to` (the current version). 410 `snapshot_required` when `since` was compacted away or is ahead
    of the current version.
    """
    feed = _runtime(request).feed
    page = await _unless_disconnected(request, feed.long_poll(since, wait))
    if page is None:  # the client went away; nobody reads this
        return Response(status_code=204)
    return Response(page.body, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get("/snapshot")
async def snapshot(request: Request, state: State, caller: EdgeCaller) -> Response:
    """The whole replicated state at one version, as NDJSON (see control/services/snapshot.py)."""
    runtime = _runtime(request)
    release = runtime.snapshots.admit()
    stream = SnapshotStream(state.pool, runtime.settings.snapshot_page_size)
    try:
        await stream.open()
    except BaseException:
        release()
        raise
    chunks = stream.lines()

    async def finish() -> None:
        try:
            await chunks.aclose()
            await stream.close()
        finally:
            release()

    return _ClosingStreamingResponse(
        chunks,
        on_close=finish,
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Meridian-Version": str(stream.version)},
    )


class _ClosingStreamingResponse(StreamingResponse):
    """Runs `on_close` however the response ends (sent, failed, client gone, never started), so the
    snapshot's connection and admission slot are always given back."""

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]], **kw: object) -> None:
        super().__init__(content, **kw)  # type: ignore[arg-type]
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


async def _unless_disconnected(request: Request, work: Awaitable[Page]) -> Page | None:
    """Run `work` unless the client disconnects first (then cancel it and return None): a long-poll
    whose client has gone must not hold the handler for the rest of its wait."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watcher.exception() is not None:  # cannot watch: just wait for the work
            await task
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    if task.cancelled():
        return None
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
