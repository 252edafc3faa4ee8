"""Queries on `changes`, the change log."""

from __future__ import annotations

from typing import Any

import asyncpg

from control.db import Conn


async def append_version(conn: Conn, channel: str, rows: list[tuple[str, str, str, dict[str, Any] | None]]) -> int:
    """Take the next system version, log `rows` under it and notify `channel`, in one round trip.

    The version row stays locked until commit, which serialises writers: commit order = version order.
    """
    version: int = await conn.fetchval(
        """
        WITH v AS (UPDATE system_version SET version = version + 1 RETURNING version),
        logged AS (
            INSERT INTO changes (version, seq, kind, id, op, body)
            SELECT v.version, c.seq, c.kind, c.id, c.op, c.body
            FROM v, unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::jsonb[]) AS c(seq, kind, id, op, body)
        )
        SELECT v.version FROM v, pg_notify($1, v.version::text) AS notified
        """,
        channel,
        list(range(len(rows))),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    return version


async def since(conn: Conn, version: int, up_to: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT version, kind, id, op, body FROM changes WHERE version > $1 AND version <= $2 ORDER BY version, seq",
        version,
        up_to,
    )


_SELECT = "SELECT version, kind, id, op, body FROM changes"


async def after(conn: Conn, since: int, up_to: int, limit: int) -> list[asyncpg.Record]:
    """At most `limit` rows with `since < version <= up_to`, in (version, seq) order."""
    return await conn.fetch(
        _SELECT + " WHERE version > $1 AND version <= $2 ORDER BY version, seq LIMIT $3", since, up_to, limit
    )


async def of_version(conn: Conn, version: int) -> list[asyncpg.Record]:
    """Every row of one version, in order."""
    return await conn.fetch(_SELECT + " WHERE version = $1 ORDER BY seq", version)


async def oldest_version_younger_than(conn: Conn, age_s: float) -> int | None:
    """The lowest version with a row created less than `age_s` seconds ago; None when every row is older."""
    version: int | None = await conn.fetchval(
        "SELECT min(version) FROM changes WHERE created_at >= now() - make_interval(secs => $1)", age_s
    )
    return version


async def delete_through(conn: Conn, version: int) -> int:
    """Delete every row at or below `version`; returns how many went."""
    status = await conn.execute("DELETE FROM changes WHERE version <= $1", version)
    return int(status.rsplit(" ", 1)[-1])


_COMPACTION_LOCK_ID = 0x4D455243  # "MERC": one compaction at a time across control planes


async def try_lock_compaction(conn: Conn) -> bool:
    """Take the compaction lock for the rest of the transaction; False when another process holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _COMPACTION_LOCK_ID))
