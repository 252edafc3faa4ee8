"""Queries on `system_version`."""

from __future__ import annotations

import asyncpg

from control.db import Conn, one


async def read(conn: Conn) -> asyncpg.Record:
    return await one(conn, "SELECT version, epoch, floor_version FROM system_version")


async def set_floor(conn: Conn, floor: int) -> None:
    await conn.execute("UPDATE system_version SET floor_version = greatest(floor_version, $1)", floor)
