"""Queries on `backends`."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one
from control.queries.edge_nodes import LIVE_STATUSES

COLUMNS = (
    "b.id, b.key, b.template_name, b.template_id, b.region, b.node_id, b.address, b.status,"
    " b.fencing_token, b.owner_token_id, b.user_id, b.secret, b.termination_reason, b.exit_code,"
    " b.created_at, b.status_changed_at"
)


async def insert(
    conn: Conn,
    *,
    backend_id: str,
    key: str | None,
    template_name: str,
    template_id: str,
    region: str,
    node_id: str,
    fencing_token: int,
    owner_token_id: str | None,
    user_id: str | None,
    secret: str,
    status: str = "scheduled",
    termination_reason: str | None = None,
    created_at: datetime | None = None,
) -> asyncpg.Record:
    """A new backend: placed by connect (`scheduled`, created now), or one an edge spawned while
    the control plane was unreachable, with the status and creation time its journal says."""
    return await one(
        conn,
        f"""
        INSERT INTO backends AS b (id, key, template_name, template_id, region, node_id, status,
                                   fencing_token, owner_token_id, user_id, secret, termination_reason,
                                   created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, COALESCE($13::timestamptz, now()))
        RETURNING {COLUMNS}
        """,
        backend_id,
        key,
        template_name,
        template_id,
        region,
        node_id,
        status,
        fencing_token,
        owner_token_id,
        user_id,
        secret,
        termination_reason,
        created_at,
    )


async def get(conn: Conn, backend_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM backends b WHERE b.id = $1{lock}", backend_id)


async def get_many(conn: Conn, ids: list[str], *, for_update: bool = False) -> list[asyncpg.Record]:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetch(f"SELECT {COLUMNS} FROM backends b WHERE b.id = ANY($1::text[]) ORDER BY b.id{lock}", ids)


async def live_for_key(conn: Conn, key: str) -> asyncpg.Record | None:
    """The key's live backend with its region's edge URL and its node's edge domain, in one round trip."""
    return await conn.fetchrow(
        f"""
        SELECT {COLUMNS}, r.edge_url, n.edge_domain FROM keys k
        JOIN backends b ON b.id = k.backend_id
        JOIN regions r ON r.name = b.region
        LEFT JOIN edge_nodes n ON n.id = b.node_id
        WHERE k.key = $1 AND b.status = ANY($2::text[])
        """,
        key,
        list(LIVE_STATUSES),
    )


async def set_status(
    conn: Conn,
    backend_id: str,
    status: str,
    *,
    address: str | None,
    termination_reason: str | None,
    exit_code: int | None,
) -> asyncpg.Record:
    return await one(
        conn,
        f"""
        UPDATE backends AS b SET status = $2, status_changed_at = now(),
            address = coalesce($3, b.address),
            termination_reason = coalesce($4, b.termination_reason),
            exit_code = coalesce($5, b.exit_code)
        WHERE b.id = $1
        RETURNING {COLUMNS}
        """,
        backend_id,
        status,
        address,
        termination_reason,
        exit_code,
    )


async def list_filtered(
    conn: Conn,
    *,
    key: str | None,
    region: str | None,
    status: str | None,
    owner_token_id: str | None,
    key_prefix: str | None = None,
    templates: list[str] | None = None,
    limit: int,
) -> list[asyncpg.Record]:
    """Each filter given narrows the list; `key_prefix` and `templates` confine it to a token's view."""
    return await conn.fetch(
        f"""
        SELECT {COLUMNS} FROM backends b
        WHERE ($1::text IS NULL OR b.key = $1) AND ($2::text IS NULL OR b.region = $2)
          AND ($3::text IS NULL OR b.status = $3) AND ($4::text IS NULL OR b.owner_token_id = $4)
          AND ($6::text IS NULL OR starts_with(b.key, $6))
          AND ($7::text[] IS NULL OR b.template_name = ANY($7::text[]))
        ORDER BY b.created_at DESC, b.id LIMIT $5
        """,
        key,
        region,
        status,
        owner_token_id,
        limit,
        key_prefix,
        templates,
    )


# Backends the sync snapshot carries: live and draining ones, and those terminated within the
# retention window, so an edge that re-snapshots still learns of recent terminations.
SNAPSHOT_FILTER = "(b.status <> 'terminated' OR b.status_changed_at > now() - make_interval(secs => $1))"


def snapshot(conn: Conn, terminated_retention_s: float) -> CursorFactory:
    """The backends of the sync snapshot (see SNAPSHOT_FILTER)."""
    return conn.cursor(f"SELECT {COLUMNS} FROM backends b WHERE {SNAPSHOT_FILTER}", terminated_retention_s)


async def mark_lost_on_silent_nodes(conn: Conn, silent_for_s: float) -> list[asyncpg.Record]:
    """Terminate (reason `lost`) the live backends of nodes silent for `silent_for_s`; their keys
    become free. Rows already locked by another writer are left for the next sweep."""
    return await conn.fetch(
        f"""
        UPDATE backends AS b SET status = 'terminated', termination_reason = 'lost', status_changed_at = now()
        WHERE b.id IN (
            SELECT b2.id FROM backends b2 JOIN edge_nodes n ON n.id = b2.node_id
            WHERE b2.status = ANY($2::text[])
              AND n.last_heartbeat_at < now() - make_interval(secs => $1)
            FOR UPDATE OF b2 SKIP LOCKED
        )
        RETURNING {COLUMNS}
        """,
        silent_for_s,
        list(LIVE_STATUSES),
    )
