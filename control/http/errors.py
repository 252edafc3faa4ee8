"""Global exception handlers: every failure reaches the client as the API's error body, never a trace."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from asyncpg.exceptions._base import DataError as ArgumentRefused
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from control.db import TRANSIENT_ERRORS
from sync.errors import BadRequest, Conflict, DatabaseUnavailable, InternalError, MeridianError, NotFound
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


def database_error(exc: Exception) -> MeridianError:
    """The API error for a database failure that reached the top of a request, mapped once here."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict("the object already exists", fields={"detail": exc.detail or ""})
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict("the change conflicts with the stored state (it refers to something missing or breaks a rule)")
    if isinstance(exc, asyncpg.DataError | ArgumentRefused):
        # The boundary's validators should have refused the value; this is the last guard, not a 500.
        log.warning("a value reached the database that it refuses: %s", type(exc).__name__)
        return BadRequest("a value in the request cannot be stored")
    return DatabaseUnavailable("the database is unreachable; retry shortly", retry_after_s=DB_RETRY_AFTER_S)


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

    async def _database(_: Request, exc: Exception) -> Response:
        return error_response(database_error(exc))

    # ArgumentRefused (asyncpg refusing a query argument, e.g. an int beyond int64) is an
    # InterfaceError, which TRANSIENT_ERRORS holds too: the handler of its own class is found first.
    db_errors: tuple[type[Exception], ...] = (
        asyncpg.IntegrityConstraintViolationError,
        asyncpg.DataError,
        ArgumentRefused,
        *(cls for cls in TRANSIENT_ERRORS if issubclass(cls, Exception)),
    )
    for cls in db_errors:
        app.add_exception_handler(cls, _database)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        if isinstance(exc, TRANSIENT_ERRORS):  # raised where the handlers above cannot see it
            return error_response(database_error(exc))
        log.exception("unhandled error")
        return error_response(InternalError("internal error"))
