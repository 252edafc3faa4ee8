"""Queries on `system_version`."""

from __future__ import annotations

import asyncpg


async def read(conn: asyncpg.Connection) -> asyncpg.Record:
    return await conn.fetchrow("SELECT version, epoch, floor_version FROM system_version")


async def bump(conn: asyncpg.Connection) -> int:
    """Take the next version. Holds the row lock until commit, which serialises writers."""
    return await conn.fetchval("UPDATE system_version SET version = version + 1 RETURNING version")


async def set_floor(conn: asyncpg.Connection, floor: int) -> None:
    await conn.execute("UPDATE system_version SET floor_version = greatest(floor_version, $1)", floor)
