"""Plain-SQL migrations (`control/migrations/NNNN_name.sql`), applied in order under an advisory lock."""

from __future__ import annotations

import re
from importlib import resources

from control.db import Conn

_LOCK_ID = 0x4D455249  # "MERI": any fixed 64-bit number shared by every control plane
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("control.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def migrate(conn: Conn) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run from many processes at once."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                number integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            COMMENT ON TABLE schema_migrations IS 'Migrations applied to this database.';
            COMMENT ON COLUMN schema_migrations.number IS 'Migration number (NNNN of the file name).';
            COMMENT ON COLUMN schema_migrations.name IS 'Migration file name.';
            COMMENT ON COLUMN schema_migrations.applied_at IS 'When it was applied.';
            """
        )
        done = {r["number"] for r in await conn.fetch("SELECT number FROM schema_migrations")}
        for number, name, sql in migration_files():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (number, name) VALUES ($1, $2)", number, name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
