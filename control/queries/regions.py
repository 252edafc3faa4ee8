"""Queries on `regions`."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one

_COLUMNS = "name, lat, lon, edge_url, capacity, created_at, updated_at"


async def upsert(conn: Conn, name: str, lat: float, lon: float, edge_url: str, capacity: int | None) -> asyncpg.Record:
    return await one(
        conn,
        f"""
        INSERT INTO regions (name, lat, lon, edge_url, capacity) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (name) DO UPDATE SET lat = EXCLUDED.lat, lon = EXCLUDED.lon,
            edge_url = EXCLUDED.edge_url, capacity = EXCLUDED.capacity,
            -- A PUT that changes nothing must not touch updated_at: it records no change row,
            -- and updated_at is part of the replicated body (edges would drift from the table).
            updated_at = CASE
                WHEN (regions.lat, regions.lon, regions.edge_url, regions.capacity)
                     IS DISTINCT FROM (EXCLUDED.lat, EXCLUDED.lon, EXCLUDED.edge_url, EXCLUDED.capacity)
                THEN now() ELSE regions.updated_at END
        RETURNING {_COLUMNS}
        """,
        name,
        lat,
        lon,
        edge_url,
        capacity,
    )


async def get(conn: Conn, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM regions WHERE name = $1", name)


async def list_all(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {_COLUMNS} FROM regions ORDER BY name")


def snapshot(conn: Conn) -> CursorFactory:
    """Every region (the sync snapshot reads it page by page inside its transaction)."""
    return conn.cursor(f"SELECT {_COLUMNS} FROM regions")
