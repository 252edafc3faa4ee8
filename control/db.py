"""Connection pool and the mapping of low-level database failures to API errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from sync.errors import Conflict, DatabaseUnavailable
from sync.timing import DB_RETRY_AFTER_S

Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy
"""A connection, whether opened directly or borrowed from the pool."""

# Failures that mean "the database is not there right now", as opposed to a bad query.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    TimeoutError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    command_timeout: float,
    on_connect: Callable[[asyncpg.Connection], None] | None = None,
) -> asyncpg.Pool:
    """`on_connect` sees each new connection once (telemetry registers its query logger there)."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if on_connect is not None:
            on_connect(conn)

    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=init,
        max_inactive_connection_lifetime=60.0,
    )


@asynccontextmanager
async def translate_db_errors() -> AsyncIterator[None]:
    """Turn driver failures into typed API errors: unreachable → 503, integrity → 409."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("the object already exists", fields={"detail": exc.detail or ""}) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise Conflict("the object refers to something that does not exist") from exc
    except TRANSIENT_ERRORS as exc:
        raise DatabaseUnavailable("the database is unreachable; retry shortly", retry_after_s=DB_RETRY_AFTER_S) from exc


async def one(conn: Conn, query: str, *args: object) -> asyncpg.Record:
    """The row a statement always returns (INSERT/UPDATE … RETURNING of a row known to exist)."""
    row = await conn.fetchrow(query, *args)
    if row is None:
        raise LookupError(f"statement returned no row: {query.split()[0]} …")
    return row
