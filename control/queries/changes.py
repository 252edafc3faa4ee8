"""Queries on `changes`, the change log."""

from __future__ import annotations

from typing import Any

import asyncpg


async def insert_many(
    conn: asyncpg.Connection, version: int, rows: list[tuple[str, str, str, dict[str, Any] | None]]
) -> None:
    await conn.executemany(
        "INSERT INTO changes (version, seq, kind, id, op, body) VALUES ($1, $2, $3, $4, $5, $6)",
        [(version, seq, kind, id_, op, body) for seq, (kind, id_, op, body) in enumerate(rows)],
    )


async def since(conn: asyncpg.Connection, version: int, up_to: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT version, kind, id, op, body FROM changes WHERE version > $1 AND version <= $2 ORDER BY version, seq",
        version,
        up_to,
    )
