"""The collaborative document's backend: one process per document (Meridian's key), holding the
text in memory and broadcasting every edit to every open WebSocket.

Meridian starts it with PORT (and MERIDIAN_KEY, MERIDIAN_FENCING_TOKEN) in its environment and
probes `GET /` until it answers. Messages, JSON both ways:
  server → client  {"type": "doc", "text": str, "version": int, "peers": int, "fencing_token": int}
  client → server  {"type": "edit", "text": str}   (last writer wins: it is a demo)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

MAX_TEXT = 100_000


@dataclass
class Document:
    text: str = ""
    version: int = 0
    fencing_token: int = 0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def message(self) -> str:
        body = {"type": "doc", "text": self.text, "version": self.version, "fencing_token": self.fencing_token}
        return json.dumps({**body, "peers": len(self.sockets)})

    async def broadcast(self) -> None:
        message = self.message()
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(message)


DOC = web.AppKey("doc", Document)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"key": os.environ.get("MERIDIAN_KEY"), "version": request.app[DOC].version})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    doc = request.app[DOC]
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    doc.sockets.add(ws)
    try:
        await doc.broadcast()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                edit = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(edit, dict) and edit.get("type") == "edit" and isinstance(edit.get("text"), str):
                doc.text = edit["text"][:MAX_TEXT]
                doc.version += 1
                await doc.broadcast()
    finally:
        doc.sockets.discard(ws)
        await doc.broadcast()
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app[DOC] = Document(fencing_token=int(os.environ.get("MERIDIAN_FENCING_TOKEN", "0")))
    app.router.add_get("/", health)
    app.router.add_get("/ws", websocket)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
