"""Connection pool, and which low-level database failures are transient (control/http/errors.py maps them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

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
    # A connection whose server died mid-statement ("cannot switch to state …"): the database is down.
    asyncpg.InternalClientError,
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


async def one(conn: Conn, query: str, *args: object) -> asyncpg.Record:
    """The row a statement always returns (INSERT/UPDATE … RETURNING of a row known to exist)."""
    row = await conn.fetchrow(query, *args)
    if row is None:
        raise LookupError(f"statement returned no row: {query.split()[0]} …")
    return row
