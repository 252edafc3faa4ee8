"""A backend for proxy tests: it tells what it saw. Run by the process executor as a script
(`python tests/backends/echo_backend.py`, listening on 127.0.0.1:$PORT).

- any request: JSON `{method, path, headers: [[name, value], ...], body_bytes, pid}`; it never
  sends `100 Continue` itself (the edge must handle `Expect`);
- a path ending in `/ws`: WebSocket; the first message is the same JSON, then every message is
  echoed (no size limit);
- a path ending in `/sse`: Server-Sent Events, `?every=S&for=S`;
- `/set-cookie?name=&path=`: sets a cookie; `/redirect?to=`: 302 to `to`;
- `START_DELAY_S` in the environment: wait that long before listening (a backend slow to start).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from aiohttp import WSMsgType, web


def _seen(request: web.Request, body_bytes: int) -> dict[str, object]:
    return {
        "method": request.method,
        "path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_bytes": body_bytes,
        "pid": os.getpid(),
        "base_path_env": os.environ.get("MERIDIAN_BASE_PATH"),
    }


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    await ws.send_str(json.dumps(_seen(request, 0)))
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def _sse(request: web.Request) -> web.StreamResponse:
    every = float(request.query.get("every", "1"))
    duration = float(request.query.get("for", "5"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    end = time.monotonic() + duration
    n = 0
    while time.monotonic() < end:
        await response.write(f"id: {n}\ndata: tick {n}\n\n".encode())
        n += 1
        await asyncio.sleep(every)
    await response.write(b"event: end\ndata: done\n\n")
    await response.write_eof()
    return response


async def handle(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path.endswith("/ws") and request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request)
    if path.endswith("/sse"):
        return await _sse(request)
    if path.endswith("/set-cookie"):
        response = web.json_response({"set": request.query["name"]})
        response.headers["Set-Cookie"] = f"{request.query['name']}=1; Path={request.query.get('path', '/')}"
        return response
    if path.endswith("/redirect"):
        return web.Response(status=302, headers={"Location": request.query["to"]})
    if path.endswith("/status"):
        return web.Response(status=int(request.query["code"]))
    body = await request.read()
    return web.json_response(_seen(request, len(body)))


async def _no_continue(request: web.Request) -> None:
    """Never answers `Expect: 100-continue` (aiohttp's default would)."""


def main() -> None:
    delay = float(os.environ.get("START_DELAY_S", "0"))
    if delay:
        time.sleep(delay)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=_no_continue)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, handle_signals=True)


if __name__ == "__main__":
    main()
