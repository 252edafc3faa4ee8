"""A WebSocket echo backend for bench/ws_idle.py: aiohttp on 127.0.0.1:$PORT, `/ws` echoes, no
server pings (idle sockets stay idle), no message-size limit. Run by the process executor."""

from __future__ import annotations

import os

from aiohttp import WSMsgType, web


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def index(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, backlog=4096)


if __name__ == "__main__":
    main()
