"""The change feed's hot path: `GET /v1/sync/changes` answered below the framework.

Thousands of edges long-poll the change feed, and each new version answers every one of them at
once: what a reply costs in the framework (routing, dependency injection, parameter validation)
would be paid N times per version. This ASGI middleware answers the ordinary request itself: a
well-formed `since` (and `wait`), a bearer token the token cache knows as valid with the `edge` (or
`admin`) scope. It hands the page's shared body and headers (built once per page, the same `bytes`
for every waiter) straight to the server. Anything else — a malformed query, an unknown or uncached
token, a 410 or a database error from the feed — goes to the framework's route
(control/routers/sync.py), which answers it the full way; so the wire format and every error stay
exactly those of the route.
"""

from __future__ import annotations

import asyncio
import math
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.services.auth import cached_caller
from control.services.sync import MAX_WAIT_S, ChangeFeed, Page
from sync.models import Scope as TokenScope
from sync.validation import INT63_MAX

PATH = "/v1/sync/changes"
_SINCE = re.compile(rb"\d{1,19}")
_WAIT = re.compile(rb"\d{1,3}(\.\d{1,9})?")


def parse_query(query: bytes) -> tuple[int, float] | None:
    """(since, wait) of `since=N[&wait=S]` in either order; None for anything the route should judge."""
    since: int | None = None
    wait: float | None = None
    for part in query.split(b"&"):
        name, eq, value = part.partition(b"=")
        if not eq:
            return None
        if name == b"since" and since is None and _SINCE.fullmatch(value):
            since = int(value)
        elif name == b"wait" and wait is None and _WAIT.fullmatch(value):
            wait = float(value)
        else:
            return None
    if since is None or since > INT63_MAX:
        return None
    if wait is None:
        wait = 0.0
    if not (math.isfinite(wait) and 0 <= wait <= MAX_WAIT_S):
        return None
    return since, wait


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


class SyncChangesFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: object | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        query = parse_query(scope["query_string"])
        caller = cached_caller(app.state.control.tokens, _authorization(scope))
        if query is None or caller is None or not caller.allows(TokenScope.EDGE):
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route_of(app)  # as the router would have set it (telemetry reads it)
        replay: list[Message] = []
        page = await _unless_disconnected(app.state.sync.feed, *query, receive, replay)
        if page is None:
            return  # the client went away; nobody reads an answer
        if isinstance(page, Page):
            await send({"type": "http.response.start", "status": 200, "headers": page.headers})
            await send({"type": "http.response.body", "body": page.body})
            return

        async def replaying() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replaying, send)  # an error: the route answers it (410, 503, ...)

    def _route_of(self, app: object) -> object | None:
        if self._route is None:
            routes = getattr(app, "routes", ())
            self._route = next((r for r in routes if getattr(r, "path", None) == PATH), None)
        return self._route


class _Failed:
    """The feed raised: the framework's route answers instead."""


async def _unless_disconnected(
    feed: ChangeFeed, since: int, wait_s: float, receive: Receive, replay: list[Message]
) -> Page | _Failed | None:
    """The long-poll, cancelled when the client disconnects (None). One watcher task per request,
    reading the client's side; what it reads before the disconnect is kept in `replay`."""
    me = asyncio.current_task()
    assert me is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    me.cancel()
                    return
                replay.append(message)
        except Exception:  # cannot watch: the long-poll just runs its course
            return

    watcher = asyncio.create_task(watch())
    try:
        return await feed.long_poll(since, wait_s)
    except asyncio.CancelledError:
        if gone:
            me.uncancel()
            return None
        raise
    except Exception:
        return _Failed()
    finally:
        watcher.cancel()
