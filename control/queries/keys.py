"""Queries on `keys`."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one


async def lock(conn: Conn, key: str) -> asyncpg.Record:
    """Create the key row if needed and lock it for the rest of the transaction."""
    # DO UPDATE (a no-op assignment) locks the existing row, where DO NOTHING would not.
    return await one(
        conn,
        "INSERT INTO keys (key) VALUES ($1) ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key"
        " RETURNING key, backend_id, fencing_token",
        key,
    )


async def assign(conn: Conn, key: str, backend_id: str, fencing_token: int) -> asyncpg.Record:
    return await one(
        conn,
        "UPDATE keys SET backend_id = $2, fencing_token = $3, updated_at = now() WHERE key = $1"
        " RETURNING key, backend_id, fencing_token, updated_at",
        key,
        backend_id,
        fencing_token,
    )


def snapshot(conn: Conn) -> CursorFactory:
    """Every key row (also those of ended backends: edges need the fencing counters), for the sync snapshot."""
    return conn.cursor("SELECT key, backend_id, fencing_token, updated_at FROM keys")
