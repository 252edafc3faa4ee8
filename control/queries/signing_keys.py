"""Queries on `signing_keys`."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one


async def active(conn: Conn) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, secret, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL"
        " ORDER BY created_at DESC LIMIT 1"
    )


async def insert(conn: Conn, key_id: str, secret: str) -> asyncpg.Record:
    return await one(
        conn,
        "INSERT INTO signing_keys (id, secret) VALUES ($1, $2) RETURNING id, secret, created_at, retired_at",
        key_id,
        secret,
    )


async def retire_all_but(conn: Conn, key_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "UPDATE signing_keys SET retired_at = now() WHERE id <> $1 AND retired_at IS NULL"
        " RETURNING id, secret, created_at, retired_at",
        key_id,
    )


def snapshot(conn: Conn) -> CursorFactory:
    """Every signing key, retired ones included (their tokens still verify), for the sync snapshot."""
    return conn.cursor("SELECT id, secret, created_at, retired_at FROM signing_keys")
