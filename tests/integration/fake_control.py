"""A scripted stand-in for the control plane's two sync endpoints, on a real loopback socket.

This is a FAULT INJECTOR, not a mock of our logic: it replays the answers a test queues (broken
ones included: malformed, truncated, skipping versions, 500s, hangs, 429s) so the edge's client and
sync loop can be driven into every failure. The control plane's real behaviour is tested against
the real server in the other sync tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

Action = Callable[[web.Request], Awaitable[web.StreamResponse]]
EPOCH = "epoch-a"


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Action:
    async def act(_: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)

    return act


def raw_reply(body: bytes, status: int = 200) -> Action:
    async def act(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type="application/json")

    return act


def error_reply(status: int, code: str, headers: dict[str, str] | None = None) -> Action:
    return json_reply({"error": {"code": code, "message": f"injected {code}", "fields": {}}}, status, headers)


def hang() -> Action:
    async def act(_: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return act


def changes(
    since: int,
    to: int,
    items: list[tuple[int, str, str, dict[str, Any] | None]],
    *,
    epoch: str = EPOCH,
    more: bool = False,
) -> Action:
    """A changes reply; items are (version, kind, id, body) (body None = delete)."""
    return json_reply(
        {
            "epoch": epoch,
            "from": since,
            "to": to,
            "more": more,
            "changes": [
                {"version": v, "kind": k, "id": i, "op": "upsert" if b is not None else "delete", "body": b}
                for v, k, i, b in items
            ],
        }
    )


def region(name: str, lat: float) -> dict[str, Any]:
    return {"name": name, "lat": lat, "lon": 0.0, "edge_url": f"http://{name}.test", "capacity": None}


def snapshot(
    version: int,
    objects: list[tuple[str, str, dict[str, Any]]],
    *,
    epoch: str = EPOCH,
    end: bool = True,
    count: int | None = None,
    trailing: bytes = b"",
) -> Action:
    """A snapshot stream; `end=False` truncates it (no end line), `count` lies about its size."""

    async def act(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(orjson.dumps({"epoch": epoch, "version": version, "kinds": ["region"]}) + b"\n")
        for kind, object_id, body in objects:
            await resp.write(orjson.dumps({"kind": kind, "id": object_id, "body": body}) + b"\n")
        if end:
            n = len(objects) if count is None else count
            await resp.write(orjson.dumps({"end": True, "count": n}) + b"\n")
        await resp.write(trailing)
        await resp.write_eof()
        return resp

    return act


class FakeControl:
    def __init__(self) -> None:
        self.snapshot_actions: asyncio.Queue[Action] = asyncio.Queue()
        self.changes_actions: asyncio.Queue[Action] = asyncio.Queue()
        self.calls: list[tuple[float, str, dict[str, str]]] = []
        self._called = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeControl:
        app = web.Application()
        app.router.add_get("/v1/sync/snapshot", self._snapshot)
        app.router.add_get("/v1/sync/changes", self._changes)
        # handler_cancellation: a request whose client went away must not consume a queued answer.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "snapshot", self.snapshot_actions)

    async def _changes(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "changes", self.changes_actions)

    async def _serve(self, request: web.Request, endpoint: str, actions: asyncio.Queue[Action]) -> web.StreamResponse:
        async with self._called:
            self.calls.append((time.monotonic(), endpoint, dict(request.query)))
            self._called.notify_all()
        action = await actions.get()  # nothing queued: wait, like a long-poll with no news
        return await action(request)

    def count(self, endpoint: str) -> int:
        return sum(1 for _, e, _ in self.calls if e == endpoint)

    async def wait_calls(self, endpoint: str, n: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s), self._called:
            await self._called.wait_for(lambda: self.count(endpoint) >= n)
