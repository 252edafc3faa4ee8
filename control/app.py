"""The control plane's FastAPI application and its lifespan (pool, migrations, notifier, keyring)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from control import telemetry
from control.db import create_pool
from control.http import errors, sync_fastpath
from control.http.limits import BodyLimitMiddleware
from control.loop_service import running
from control.migrate import migrate
from control.notifier import VersionNotifier
from control.placement import GeoLocator, Placer
from control.routers import (
    backend_logs,
    backends,
    connect,
    fleet,
    health,
    nodes,
    placement,
    regions,
    templates,
    tokens,
    ui,
)
from control.routers import sync as sync_routes
from control.services.auth import ensure_token
from control.services.failover import failover_service
from control.services.signing import Keyring, ensure_active_key
from control.services.sync_runtime import sync_runtime
from control.settings import ControlSettings
from control.state import ControlState
from sync.models import Scope

log = logging.getLogger(__name__)


def open_placer(settings: ControlSettings) -> Placer:
    path = settings.effective_geoip_db()
    if path is None:
        log.warning("no GeoIP database configured: placement uses pinned region, location, arrival edge, default")
        return Placer(None)
    return Placer(GeoLocator.open(path))


class ControlApp(FastAPI):
    """The FastAPI app, with the change feed's long-polls answered before the framework sees them
    (control/http/sync_fastpath.py: what one reply costs is paid once per waiting edge)."""

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if sync_fastpath.handles(scope):
            fallback = await sync_fastpath.serve(self, scope, receive, send)
            if fallback is None:
                return
            receive = fallback
        await super().__call__(scope, receive, send)


def create_app(settings: ControlSettings, database_url: str) -> FastAPI:
    """`database_url` is resolved by the caller (an embedded server or MERIDIAN_DATABASE_URL)."""
    placer = open_placer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = settings.database
        pool = await create_pool(
            database_url,
            min_size=db.pool_min,
            max_size=db.pool_max,
            command_timeout=db.command_timeout_s,
            on_connect=tel.on_db_connection,
        )
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
            if settings.admin_token:
                await ensure_token(pool, "bootstrap admin", settings.admin_token, [Scope.ADMIN])
            keyring = Keyring()
            await ensure_active_key(pool, keyring)
            notifier = VersionNotifier(database_url, pool)
            await notifier.start()
            app.state.control = ControlState(
                settings=settings, pool=pool, notifier=notifier, keyring=keyring, placer=placer
            )
            try:
                async with (
                    sync_runtime(settings.sync, pool, notifier) as app.state.sync,
                    running(failover_service(pool)),
                    telemetry.running(tel, pool),
                ):
                    yield
            finally:
                await notifier.stop()
        finally:
            await pool.close()

    app = ControlApp(
        title="Meridian control plane",
        version="1",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (
        health,
        regions,
        templates,
        connect,
        placement,
        fleet,
        backends,
        backend_logs,
        nodes,
        tokens,
        sync_routes,
        ui,
    ):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    tel = telemetry.install(app)
    return app
