"""Queries on `api_tokens`."""

from __future__ import annotations

import asyncpg


async def insert(
    conn: asyncpg.Connection, token_id: str, name: str, token_hash: bytes, scopes: list[str]
) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO api_tokens (id, name, token_hash, scopes) VALUES ($1, $2, $3, $4)
        ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL, scopes = EXCLUDED.scopes
        RETURNING id, name, scopes, created_at
        """,
        token_id,
        name,
        token_hash,
        scopes,
    )


async def by_hash(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, scopes FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", token_hash
    )
