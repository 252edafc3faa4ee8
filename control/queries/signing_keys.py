"""Queries on `signing_keys`."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory


async def active(conn: asyncpg.Connection) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, secret, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL"
        " ORDER BY created_at DESC LIMIT 1"
    )


async def insert(conn: asyncpg.Connection, key_id: str, secret: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO signing_keys (id, secret) VALUES ($1, $2) RETURNING id, secret, created_at, retired_at",
        key_id,
        secret,
    )


async def retire_all_but(conn: asyncpg.Connection, key_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "UPDATE signing_keys SET retired_at = now() WHERE id <> $1 AND retired_at IS NULL"
        " RETURNING id, secret, created_at, retired_at",
        key_id,
    )


def snapshot(conn: asyncpg.Connection) -> CursorFactory:
    """Every signing key, retired ones included (their tokens still verify), for the sync snapshot."""
    return conn.cursor("SELECT id, secret, created_at, retired_at FROM signing_keys")
