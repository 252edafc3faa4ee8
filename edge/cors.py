"""CORS for the edge's `/v1/connect`, so a web page of an allowed origin can call it: preflight
answered per the allow-list, and the allowed origin echoed on the actual answer (errors included)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from edge import keys
from sync.errors import Forbidden

CORS_PATHS = frozenset(("/v1/connect",))
PREFLIGHT_MAX_AGE_S = 600
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _allowed(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin in request.app[keys.SETTINGS].cors_origins else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in CORS_PATHS:
        return await handler(request)
    origin = _allowed(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if origin is None:
            error = Forbidden("this origin may not call the edge from a browser")
            return web.json_response(error.to_body(), status=error.status, headers={"Vary": "Origin"})
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response
