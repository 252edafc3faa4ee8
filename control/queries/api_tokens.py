"""Queries on `api_tokens`."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one


async def insert(conn: Conn, token_id: str, name: str, token_hash: bytes, scopes: list[str]) -> asyncpg.Record:
    return await one(
        conn,
        """
        INSERT INTO api_tokens (id, name, token_hash, scopes) VALUES ($1, $2, $3, $4)
        ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL, scopes = EXCLUDED.scopes
        RETURNING id, name, scopes, created_at, encode(token_hash, 'hex') AS hash, revoked_at
        """,
        token_id,
        name,
        token_hash,
        scopes,
    )


async def by_hash(conn: Conn, token_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, scopes FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", token_hash
    )


def replicated(row: asyncpg.Record) -> dict[str, object]:
    """What edges hold of a token: its hash (never the secret), id, scopes and revocation."""
    return {"hash": row["hash"], "token_id": row["id"], "scopes": list(row["scopes"]), "revoked_at": row["revoked_at"]}


def snapshot(conn: Conn) -> CursorFactory:
    """Every API token as edges hold it, for the sync snapshot."""
    return conn.cursor("SELECT encode(token_hash, 'hex') AS hash, id AS token_id, scopes, revoked_at FROM api_tokens")
