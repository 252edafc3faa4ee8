"""Queries on `keys`."""

from __future__ import annotations

import asyncpg


async def lock(conn: asyncpg.Connection, key: str) -> asyncpg.Record:
    """Create the key row if needed and lock it for the rest of the transaction."""
    await conn.execute("INSERT INTO keys (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", key)
    return await conn.fetchrow("SELECT key, backend_id, fencing_token FROM keys WHERE key = $1 FOR UPDATE", key)


async def assign(conn: asyncpg.Connection, key: str, backend_id: str, fencing_token: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE keys SET backend_id = $2, fencing_token = $3, updated_at = now() WHERE key = $1"
        " RETURNING key, backend_id, fencing_token, updated_at",
        key,
        backend_id,
        fencing_token,
    )
