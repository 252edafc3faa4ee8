"""The change feed's hot path: `GET /v1/sync/changes` answered below the framework.

Thousands of edges long-poll the change feed, and each new version answers every one of them at
once: what a reply costs in the framework (middleware, routing, dependency injection, parameter
validation) would be paid N times per version. The app (control/app.py) hands such a request to
`serve` before the framework sees it, and `serve` answers the ordinary one itself: a well-formed
`since` (and `wait`), no body, a bearer token with the `edge` (or `admin`) scope (the token cache
answers, or one shared database read per token when its entry expired). It hands the page's shared
body and headers (built once per page: the same `bytes` object for every waiter) straight to the
server, and records the same request metrics as the telemetry middleware. Anything else — a
malformed query, a bad token, tracing on, a 410 or a database error from the feed — goes to the
framework's route (control/routers/sync.py), which answers it the full way; so the wire format and
every error stay exactly those of the route.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from control.services.auth import Caller, authenticate
from control.services.sync import MAX_WAIT_S, ChangeFeed, Page
from control.state import ControlState
from control.telemetry import ControlTelemetry
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


def _headers(scope: Scope) -> tuple[str | None, bool]:
    """(the Authorization header, whether the request says it has a body)."""
    authorization: str | None = None
    body = False
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            body = True
    return authorization, body


async def _caller(state: ControlState, authorization: str | None) -> Caller | None:
    try:
        return await authenticate(state.pool, state.tokens, authorization)
    except Exception:  # unauthorized, or the database is down: the route answers it
        return None


def handles(scope: Scope) -> bool:
    return bool(scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "GET")


async def serve(app: Any, scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """Answer a `handles(scope)` request; None when answered (or the client went away), else the
    `receive` with which the framework's route must answer it instead."""
    tel: ControlTelemetry = app.state.telemetry
    query = parse_query(scope["query_string"])
    authorization, has_body = _headers(scope)
    if query is None or has_body or tel.tracing:  # traced requests take the instrumented path
        return receive
    caller = await _caller(app.state.control, authorization)
    if caller is None or not caller.allows(TokenScope.EDGE):
        return receive
    started = time.perf_counter()
    tel.active_requests.begin("GET")
    try:
        replay: list[Message] = []
        page = await _unless_disconnected(app.state.sync.feed, *query, receive, replay)
        if page is None:
            return None  # the client went away; nobody reads an answer
        if not isinstance(page, Page):

            async def replaying() -> Message:
                return replay.pop(0) if replay else await receive()

            return replaying  # an error: the route answers it (410, 503, ...)
        await send({"type": "http.response.start", "status": 200, "headers": page.headers})
        await send({"type": "http.response.body", "body": page.body})
        tel.request_duration.record(time.perf_counter() - started, _ATTRIBUTES)
        return None
    finally:
        tel.active_requests.end("GET")


_ATTRIBUTES = {"http.request.method": "GET", "http.response.status_code": 200, "http.route": PATH}


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
