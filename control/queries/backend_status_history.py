"""Queries on `backend_status_history` (rows are written by a trigger on `backends`)."""

from __future__ import annotations

import asyncpg

from control.db import Conn


async def after(conn: Conn, backend_id: str, seq: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT seq, status, reason, at FROM backend_status_history WHERE backend_id = $1 AND seq > $2 ORDER BY seq",
        backend_id,
        seq,
    )
