"""Global exception handlers: every failure reaches the client as the API's error body, never a trace."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from control.db import TRANSIENT_ERRORS
from sync.errors import BadRequest, DatabaseUnavailable, InternalError, MeridianError, NotFound
from sync.timing import DB_RETRY_AFTER_S

log = logging.getLogger(__name__)


def error_response(exc: MeridianError) -> Response:
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return Response(orjson.dumps(exc.to_body()), status_code=exc.status, headers=headers, media_type="application/json")


def _validation_fields(exc: RequestValidationError) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        fields[".".join(loc) or "body"] = err.get("msg", "invalid")
    return fields


def install(app: FastAPI) -> None:
    @app.exception_handler(MeridianError)
    async def _meridian(_: Request, exc: MeridianError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(BadRequest("the request is not valid", fields=_validation_fields(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFound("no such endpoint"))
        if exc.status_code == 405:
            err = BadRequest("method not allowed on this endpoint")
            err.status = 405
            return error_response(err)
        return error_response(BadRequest(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        if isinstance(exc, TRANSIENT_ERRORS):
            return error_response(
                DatabaseUnavailable("the database is unreachable; retry shortly", retry_after_s=DB_RETRY_AFTER_S)
            )
        log.exception("unhandled error")
        return error_response(InternalError("internal error"))
