"""Queries on `backend_status_history`."""

from __future__ import annotations

import asyncpg


async def append(conn: asyncpg.Connection, backend_id: str, status: str, reason: str | None) -> None:
    await conn.execute(
        "INSERT INTO backend_status_history (backend_id, status, reason) VALUES ($1, $2, $3)",
        backend_id,
        status,
        reason,
    )


async def after(conn: asyncpg.Connection, backend_id: str, seq: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT seq, status, reason, at FROM backend_status_history WHERE backend_id = $1 AND seq > $2 ORDER BY seq",
        backend_id,
        seq,
    )
