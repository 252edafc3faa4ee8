"""The ``demo`` backend that ships with Meridian: ``python -m meridian.demo``.

An HTTP + WebSocket echo server on ``$HOST:$PORT`` (``HOST`` defaults to 127.0.0.1; a container
image would set 0.0.0.0):

* ``GET /``      small HTML page with the backend's id, key, region and fencing token;
* ``GET /info``  the same as JSON, plus ``pid``, ``proxied`` (the request carried
  ``x-meridian-secret`` equal to ``MERIDIAN_SECRET``) and ``headers_seen`` (names of the
  ``x-meridian-*`` request headers; never their values);
* ``GET /ws``    WebSocket echo, text and binary;
* ``POST /echo`` streams the request body back as it arrives;
* ``POST /_meridian/claim`` (the template's ``claim_path`` for a warm pool): a pool member started
  without an identity (``MERIDIAN_POOL_MEMBER`` set, no ``MERIDIAN_BACKEND_ID``) takes the one the
  edge sends — ``backend_id``, ``key``, ``fencing_token``, ``user``, ``secret``, ``base_path`` — once,
  when the call carries the ``x-meridian-secret`` it was started with. ``/info`` then shows it,
  with ``claimed: true`` and the claiming ``user``.

SIGTERM or SIGINT → graceful shutdown, exit code 0. It must start fast: only aiohttp and a few
standard modules are imported, and nothing from the rest of Meridian.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import os
import signal
import sys

if __name__ == "__main__":
    # Start-up time (halves it): importing aiohttp builds its default client TLS contexts, parsing
    # the whole system CA bundle, and imports aiodns/pycares. Run as a program, this server makes no
    # outgoing connections and resolves no names, so it points OpenSSL at an empty trust store and
    # keeps aiodns out (aiohttp falls back to its unused threaded resolver). Imported as a module
    # (tests), it changes nothing in the importing process.
    os.environ["SSL_CERT_FILE"] = os.devnull
    os.environ["SSL_CERT_DIR"] = os.devnull
    sys.modules.setdefault("aiodns", None)  # type: ignore[arg-type]

from aiohttp import WSMsgType, web

_WEBSOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])
CLAIM_PATH = "/_meridian/claim"

_CLAIM = web.AppKey("claim", dict[str, object])
"""What the claim said (empty until a warm-pool member is claimed): it overrides the environment."""


def _env_identity() -> dict[str, object]:
    token = os.environ.get("MERIDIAN_FENCING_TOKEN", "")
    return {
        "backend_id": os.environ.get("MERIDIAN_BACKEND_ID", ""),
        "key": os.environ.get("MERIDIAN_KEY") or None,  # the executor passes "" for a keyless backend
        "region": os.environ.get("MERIDIAN_REGION", ""),
        "fencing_token": int(token) if token.isdigit() else None,
    }


def _identity(app: web.Application) -> dict[str, object]:
    claimed = app[_CLAIM]
    if not claimed:
        return _env_identity()
    fields = ("backend_id", "key", "fencing_token")
    return {**_env_identity(), **{name: claimed.get(name) for name in fields}}


def _secret(app: web.Application) -> str:
    claimed = app[_CLAIM].get("secret")
    return claimed if isinstance(claimed, str) else os.environ.get("MERIDIAN_SECRET", "")


def _proxied(request: web.Request) -> bool:
    secret = _secret(request.app)
    sent = request.headers.get("x-meridian-secret")
    return bool(secret) and sent is not None and hmac.compare_digest(sent.encode(), secret.encode())


async def claim(request: web.Request) -> web.Response:
    """A warm-pool member learns whose backend it is: once, from the edge (it knows the secret)."""
    if not _proxied(request):
        return web.json_response({"error": "not from this backend's edge"}, status=403)
    claimed = request.app[_CLAIM]
    if claimed or not os.environ.get("MERIDIAN_POOL_MEMBER"):
        return web.json_response({"error": "already claimed"}, status=409)
    try:
        body = await request.json()
        token, backend_id, secret = body["fencing_token"], body["backend_id"], body["secret"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "claim needs backend_id, fencing_token and secret"}, status=400)
    if not (isinstance(token, int) and isinstance(backend_id, str) and isinstance(secret, str) and secret):
        return web.json_response({"error": "claim needs backend_id, fencing_token and secret"}, status=400)
    claimed.update({name: body.get(name) for name in ("backend_id", "key", "fencing_token", "user", "secret")})
    return web.json_response({"claimed": backend_id})


async def index(request: web.Request) -> web.Response:
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in _identity(request.app).items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Meridian demo backend</title></head>"
        f"<body><h1>Meridian demo backend</h1><table>{rows}</table>"
        "<p>Try <code>/info</code>, <code>POST /echo</code> and the WebSocket echo at <code>/ws</code>.</p>"
        "</body></html>"
    )
    return web.Response(text=page, content_type="text/html")


async def info(request: web.Request) -> web.Response:
    body = _identity(request.app)
    body["pid"] = os.getpid()
    body["claimed"] = bool(request.app[_CLAIM])
    body["user"] = request.app[_CLAIM].get("user")
    body["proxied"] = _proxied(request)
    body["headers_seen"] = sorted({h.lower() for h in request.headers if h.lower().startswith("x-meridian-")})
    return web.json_response(body)


async def echo(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.content_type = request.content_type or "application/octet-stream"
    await resp.prepare(request)
    async for chunk in request.content.iter_any():
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    sockets = request.app[_WEBSOCKETS]
    sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        sockets.discard(ws)
    return ws


async def _close_websockets(app: web.Application) -> None:
    sockets = app[_WEBSOCKETS]
    for ws in list(sockets):
        await ws.close(code=1001, message=b"server shutting down")


def make_app() -> web.Application:
    app = web.Application()
    app[_WEBSOCKETS] = set[web.WebSocketResponse]()
    app[_CLAIM] = {}
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/", index)
    app.router.add_get("/info", info)
    app.router.add_get("/ws", websocket)
    app.router.add_post("/echo", echo)
    app.router.add_post(CLAIM_PATH, claim)
    return app


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"meridian demo backend listening on http://{host}:{port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    port_text = os.environ.get("PORT", "")
    if not port_text.isdigit():
        sys.exit("meridian.demo: PORT must be set to a TCP port number")
    asyncio.run(serve(os.environ.get("HOST", "127.0.0.1"), int(port_text)))


if __name__ == "__main__":
    main()
