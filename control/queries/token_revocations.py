"""Queries on `token_revocations`."""

from __future__ import annotations

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one
from control.queries.backends import SNAPSHOT_FILTER


async def insert(conn: Conn, revocation_id: str, backend_id: str, user_id: str | None) -> asyncpg.Record:
    return await one(
        conn,
        "INSERT INTO token_revocations (id, backend_id, user_id) VALUES ($1, $2, $3)"
        " RETURNING id, backend_id, user_id, revoked_at",
        revocation_id,
        backend_id,
        user_id,
    )


def snapshot(conn: Conn, terminated_retention_s: float) -> CursorFactory:
    """Revocations of the backends the sync snapshot carries, for the sync snapshot."""
    return conn.cursor(
        "SELECT r.id, r.backend_id, r.user_id, r.revoked_at FROM token_revocations r"
        f" JOIN backends b ON b.id = r.backend_id WHERE {SNAPSHOT_FILTER}",
        terminated_retention_s,
    )
