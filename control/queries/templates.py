"""Queries on `templates` (immutable, content-addressed specs)."""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn


async def insert_if_absent(conn: Conn, template_id: str, spec: dict[str, Any]) -> bool:
    """Store the spec; True when it was not stored before."""
    inserted = await conn.fetchval(
        "INSERT INTO templates (id, spec) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING true",
        template_id,
        spec,
    )
    return bool(inserted)


async def get(conn: Conn, template_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, spec, created_at FROM templates WHERE id = $1", template_id)


def snapshot(conn: Conn) -> CursorFactory:
    """Every template as replicated: {id, spec}, for the sync snapshot."""
    return conn.cursor("SELECT id, spec FROM templates")
