"""Queries on `template_names` (name → current template id)."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn

_SELECT = """
    SELECT tn.name, tn.template_id AS id, t.spec, tn.updated_at
    FROM template_names tn JOIN templates t ON t.id = tn.template_id
"""


async def get(conn: Conn, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_SELECT + " WHERE tn.name = $1", name)


async def list_all(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch(_SELECT + " ORDER BY tn.name")


async def point(conn: Conn, name: str, template_id: str) -> asyncpg.Record | None:
    """Point `name` at `template_id`; returns the row, or None when it already pointed there."""
    return await conn.fetchrow(
        """
        INSERT INTO template_names (name, template_id) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET template_id = EXCLUDED.template_id, updated_at = now()
            WHERE template_names.template_id IS DISTINCT FROM EXCLUDED.template_id
        RETURNING name, template_id AS id, updated_at
        """,
        name,
        template_id,
    )


def snapshot(conn: Conn) -> CursorFactory:
    """Every name as replicated: {name, id}, for the sync snapshot."""
    return conn.cursor("SELECT name, template_id AS id FROM template_names")
