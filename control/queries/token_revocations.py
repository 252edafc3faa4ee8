"""Queries on `token_revocations`."""

from __future__ import annotations

import asyncpg


async def insert(conn: asyncpg.Connection, revocation_id: str, backend_id: str, user_id: str | None) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO token_revocations (id, backend_id, user_id) VALUES ($1, $2, $3)"
        " RETURNING id, backend_id, user_id, revoked_at",
        revocation_id,
        backend_id,
        user_id,
    )
