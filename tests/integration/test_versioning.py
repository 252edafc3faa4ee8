"""The versioned state: commit order equals version order, so a change-log reader misses nothing."""

from __future__ import annotations

import asyncio

import asyncpg

from control.migrate import migrate, migration_files
from control.queries import changes as changes_q
from tests.conftest import RunningControl


async def test_reader_polling_the_change_log_never_misses_a_version_under_8_writers(
    control: RunningControl, db_url: str
) -> None:
    pool = control.state.pool
    writes_per_writer = 60
    from control.services import regions as regions_service
    from sync.models import RegionIn

    async def writer(w: int) -> None:
        for i in range(writes_per_writer):
            await regions_service.put_region(
                pool, f"r{w}", RegionIn(lat=float(i % 80), lon=float(w), edge_url=f"http://r{w}.test")
            )

    seen: list[int] = []
    done = asyncio.Event()

    async def reader(cursor: int) -> None:
        conn = await asyncpg.connect(db_url)
        try:
            while True:
                finished = done.is_set()
                current = await conn.fetchval("SELECT version FROM system_version")
                for row in await changes_q.since(conn, cursor, current):
                    seen.append(row["version"])
                    cursor = row["version"]
                cursor = max(cursor, current)
                if finished:
                    return
        finally:
            await conn.close()

    start = await pool.fetchval("SELECT version FROM system_version")
    read_task = asyncio.create_task(reader(start))
    await asyncio.gather(*(writer(w) for w in range(8)))
    done.set()
    await read_task
    end = await pool.fetchval("SELECT version FROM system_version")
    assert end - start == 8 * writes_per_writer
    assert sorted(set(seen)) == list(range(start + 1, end + 1)), "the reader skipped or lost a version"
    assert seen == sorted(seen), "versions arrived out of order"


async def test_migrations_are_idempotent_and_race_free(db_url: str) -> None:
    conns = [await asyncpg.connect(db_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        names = [n for _, n, _ in migration_files()]
        assert sorted(n for applied in results for n in applied) == sorted(names), "each migration applied exactly once"
        assert await migrate(conns[0]) == []
        assert await conns[0].fetchval("SELECT version FROM system_version") == 0
    finally:
        for c in conns:
            await c.close()


async def test_every_table_and_column_is_documented(control: RunningControl) -> None:
    rows = await control.state.pool.fetch(
        """
        SELECT c.table_name, c.column_name,
               col_description(format('%I', c.table_name)::regclass, c.ordinal_position) AS doc,
               obj_description(format('%I', c.table_name)::regclass, 'pg_class') AS table_doc
        FROM information_schema.columns c
        WHERE c.table_schema = 'public'
        """
    )
    missing = [f"{r['table_name']}.{r['column_name']}" for r in rows if not r["doc"]]
    missing += sorted({r["table_name"] for r in rows if not r["table_doc"]})
    assert rows and missing == []
