"""Run the control plane: resolve the database (embedded unless a URL is given), then serve HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from control.app import create_app
from control.embedded_db import DATABASE_NAME, EmbeddedPostgres, Supervisor, become_subreaper, ensure_database
from control.settings import ControlSettings
from sync.open_files import raise_soft_limit
from sync.timing import CONTROL_SERVER_KEEPALIVE_S

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after shutting down, which would skip our own cleanup
    (stopping the embedded PostgreSQL); this server just shuts down and returns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


EDGES_WORTH_HOLDING = 4096
"""Below this many descriptors the control plane says so at start: each long-polling edge holds one."""

FULL_COLLECTION_EVERY = 10_000
"""Middle-generation collections between two full ones (CPython's default is 10)."""


def tune_garbage_collector() -> None:
    """Full collections rarely; the start-up heap never again.

    Every long-polling edge keeps a few hundred objects alive (its connection, its waiting request),
    so at 10,000 edges the heap holds millions that are not garbage; with CPython's defaults a full
    collection scans all of them every few versions, which cost three quarters of the CPU of a
    fan-out to 10,000 edges (bench/RESULTS.md, fanout). Cyclic garbage here is young (the
    collector found ~1,000 such objects in a whole benchmark run): the young generations, still
    collected as usual, catch it; the full collection runs after FULL_COLLECTION_EVERY of them
    instead of 10. `gc.freeze()` moves what start-up built (modules, the app) out of every scan."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def serve(settings: ControlSettings) -> None:
    """Blocking. Stops the embedded PostgreSQL it started when the server exits."""
    raise_soft_limit(EDGES_WORTH_HOLDING, f"long-polls from {EDGES_WORTH_HOLDING} edges")
    embedded: EmbeddedPostgres | None = None
    supervisor: Supervisor | None = None
    url = settings.effective_database_url()
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        become_subreaper()
        admin_url = embedded.start()
        url = asyncio.run(ensure_database(admin_url, DATABASE_NAME))
        log.info("embedded PostgreSQL running in %s", embedded.pgdata)
        supervisor = embedded.supervise()
    try:
        app = create_app(settings, url)
        tune_garbage_collector()
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_keep_alive=int(CONTROL_SERVER_KEEPALIVE_S),
            proxy_headers=settings.trusted_proxies is not None,
            forwarded_allow_ips=settings.trusted_proxies,
        )
        _Server(config).run()
    finally:
        if supervisor is not None:
            supervisor.stop()
        if embedded is not None:
            embedded.stop()
