"""The edge node's aiohttp application. Every background task is owned by a cleanup context, so
it starts with the app and is stopped (and its backends with it) when the app shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from edge import keys, local_api, logs_api, status_stream
from edge import telemetry as edge_telemetry
from edge.activity import Activity
from edge.control_client import ControlClient
from edge.cors import cors_middleware
from edge.drain import DrainState, ExitPlan, drain_before_exit, stop_idle_while_draining
from edge.drone import Drone
from edge.executors.setup import build_executors
from edge.fastpath import ClientProtocol, FastPath, Limits
from edge.forwarding import ForwardingPolicy, redacted
from edge.journal import Journal
from edge.journal_replay import JournalReplayer
from edge.node_token import NodeToken
from edge.offline_connect import OfflineConnect
from edge.proxy import Proxy, proxy_client_session
from edge.replica import Replica
from edge.settings import EdgeSettings
from edge.telemetry import TELEMETRY, EdgeTelemetry, telemetry_middleware
from edge.warm_pool import WarmPool
from sync.client import SyncClient
from sync.discovery import SrvEndpoints
from sync.errors import InternalError, MeridianError, NotFound
from sync.loop import SyncLoop
from sync.models import HeartbeatIn
from sync.open_files import needed_for, raise_soft_limit
from sync.timing import CONTROL_CLIENT_KEEPALIVE_S, HEARTBEAT_INTERVAL_S

log = logging.getLogger(__name__)

SHUTDOWN_REPORT_S = 3.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(exc: MeridianError) -> web.Response:
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))} if exc.retry_after_s else None
    return web.json_response(exc.to_body(), status=exc.status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MeridianError as exc:
        return _error_response(exc)
    except web.HTTPNotFound:
        return _error_response(NotFound("no such endpoint"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {"error": {"code": "bad_request", "message": exc.reason, "fields": {}}}
        return web.json_response(body, status=exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, redacted(request.path))
        return _error_response(InternalError("internal error"))


@web.middleware
async def subdomain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    proxy = request.app[keys.PROXY]
    if proxy.subdomain_backend(request) is not None:
        return await proxy.handle(request)
    return await handler(request)


async def send_heartbeat(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    public_url = settings.effective_public_url(settings.port)
    hb = HeartbeatIn(
        node_id=app[keys.NODE_ID],
        region=settings.region,
        address=settings.effective_internal_url(settings.port),  # what other edges dial
        edge_url=public_url,
        capacity=settings.capacity,
        applied_version=app[keys.REPLICA].applied_version or 0,
        backends=app[keys.DRONE].reports(),
        executors=app[keys.EXECUTORS].kinds,
        shutting_down=app[keys.DRAIN].shutting_down,
        unhealthy_reason=app[keys.REPLICA].problem,
        warm_pools=local_api.warm_pools(app),
        enrol=not app[keys.NODE_TOKEN].enrolled,
        edge_domain=settings.edge_domain,
    )
    try:
        answer = await app[keys.CONTROL].heartbeat(hb)
    except MeridianError as exc:
        log.warning("heartbeat failed: %s (%s)", exc.message, exc.code.value)
        return
    if answer.node_token is not None:
        await _enrolled(app, answer.node_token)
    app[keys.DRAIN].update(answer.draining)
    if not app[keys.SYNC_LOOP].reachable:
        app[keys.SYNC_LOOP].nudge()  # the control plane is back: sync (and replay) now, not after a backoff


async def _enrolled(app: web.Application, secret: str) -> None:
    """The control plane bound a token to this node: keep it and speak with it from now on."""
    await asyncio.to_thread(app[keys.NODE_TOKEN].store, secret)
    app[keys.CONTROL].use_token(secret)
    app[keys.SYNC_CLIENT].use_token(secret)
    log.info("node %s enrolled: using its own node-bound token", app[keys.NODE_ID])


async def _heartbeat_forever(app: web.Application) -> None:
    while True:
        await send_heartbeat(app)
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _owned_task(factory: Callable[[web.Application], Coroutine[Any, Any, None]], name: str) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(factory(app), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


async def _core(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=CONTROL_CLIENT_KEEPALIVE_S),
        auto_decompress=False,
    )
    proxy_session = proxy_client_session()
    endpoints = settings.control_endpoints()  # one view of the control planes for every client
    replica = await asyncio.to_thread(Replica.open, settings.data_dir / "replica")
    journal = await asyncio.to_thread(Journal.open, settings.data_dir / "journal")
    try:
        app[keys.JOURNAL] = journal
        app[keys.SESSION] = session
        app[keys.REPLICA] = replica
        app[keys.NODE_ID] = await asyncio.to_thread(settings.node_id)
        # Built off the loop: the SDK's resource detection and exporter imports block.
        tel = app[TELEMETRY] = await asyncio.to_thread(EdgeTelemetry, settings.region, app[keys.NODE_ID])
        node_token = app[keys.NODE_TOKEN] = NodeToken(settings.data_dir, settings.token)
        token = await asyncio.to_thread(node_token.load)
        control = ControlClient(endpoints, token, session)
        app[keys.CONTROL] = control
        activity = Activity()
        app[keys.ACTIVITY] = activity
        pool = WarmPool(
            node_id=app[keys.NODE_ID],
            region=settings.region,
            replica=replica,
            capacity=settings.capacity,
            running=lambda: drone.running(),
            draining=lambda: app[keys.DRAIN].draining,
        )
        drone = Drone(
            node_id=app[keys.NODE_ID],
            region=settings.region,
            replica=replica,
            control=control,
            activity=activity,
            idle_check_s=settings.idle_check_s,
            journal=journal,
            online=lambda: app[keys.SYNC_LOOP].reachable,
            pool=pool,
        )
        executor = build_executors(settings, drone.on_exit)
        app[keys.EXECUTORS] = executor
        drone.attach(tel.traced_executor(executor, replica))
        app[keys.DRONE] = drone
        app[keys.DRAIN] = DrainState()
        app[keys.EXIT_PLAN] = ExitPlan(keep_backends=settings.on_exit == "keep")
        replica.add_listener(drone.on_changes)
        app[keys.SYNC_CLIENT] = SyncClient(endpoints, token, session=session)
        app[keys.SYNC_LOOP] = SyncLoop(app[keys.SYNC_CLIENT], tel.traced_sink(replica))
        app[keys.PROXY] = Proxy(
            replica=replica,
            drone=drone,
            activity=activity,
            session=proxy_session,
            node_id=app[keys.NODE_ID],
            region=settings.region,
            max_body_bytes=settings.max_body_bytes,
            ready_wait_s=settings.ready_wait_s,
            edge_domain=settings.edge_domain,
            policy=ForwardingPolicy(
                trusted_proxies=settings.trusted_proxies,
                default_host=urlsplit(settings.effective_public_url(settings.port)).netloc,
            ),
        )
        replica.add_listener(app[keys.PROXY].on_changes)
        app[keys.PROXY].on_ready_wait = lambda s: tel.ready_wait_duration.record(s, {})
        drone.timing = lambda step, s, attrs: tel.start_step_duration.record(s, {"step": step, **attrs})
        tel.watch(activity=activity, drone=drone, loop=app[keys.SYNC_LOOP], replica=replica)
        tel.watch_journal(lambda: journal.pending)
        drone.add_stop_listener(app[keys.PROXY].on_backend_stopping)
        app[keys.OFFLINE] = OfflineConnect(
            replica=replica,
            drone=drone,
            node_id=app[keys.NODE_ID],
            region=settings.region,
            capacity=settings.capacity,
            control_url=settings.control_url,
            edge_url=settings.effective_public_url(settings.port),
        )
        app[keys.REPLAYER] = JournalReplayer(
            journal=journal, control=control, loop=app[keys.SYNC_LOOP], node_id=app[keys.NODE_ID]
        )
        await drone.restore()  # before anything else: take over what this node was running
        yield
        if app[keys.EXIT_PLAN].keep_backends:
            # An upgrade or restart: the backends keep serving, the journal (fsynced) says what runs
            # where, and the next edge process on this data directory adopts them (drone.restore).
            await executor.detach()
            log.info("exiting with %d backend(s) left running for the next edge to adopt", drone.running())
        else:
            await executor.close()
            # Tell the control plane those backends are gone, so their keys are free at once rather
            # than after KEY_FAILOVER_AFTER_S (best effort: it may be unreachable).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_REPORT_S):
                    await send_heartbeat(app)
    finally:
        await proxy_session.close()
        await session.close()
        if isinstance(endpoints, SrvEndpoints):
            await endpoints.close()
        await asyncio.to_thread(replica.close)
        await asyncio.to_thread(journal.close)
        if TELEMETRY in app:
            await asyncio.to_thread(app[TELEMETRY].shutdown)


async def _sync(app: web.Application) -> None:
    await app[keys.SYNC_LOOP].run()


async def _drone(app: web.Application) -> None:
    await app[keys.DRONE].run()


async def _replay(app: web.Application) -> None:
    await app[keys.REPLAYER].run()


async def _drain(app: web.Application) -> None:
    await stop_idle_while_draining(
        app[keys.DRAIN], app[keys.DRONE], app[keys.ACTIVITY], app[keys.SETTINGS].idle_check_s
    )


def _keep_and_stop(plan: ExitPlan, stop: asyncio.Event) -> Callable[[], None]:
    def handler() -> None:
        plan.keep_backends = True
        stop.set()

    return handler


async def _drain_before_exit(app: web.Application, timeout_s: float) -> bool:
    return await drain_before_exit(app[keys.DRAIN], app[keys.DRONE], lambda: send_heartbeat(app), timeout_s)


async def _drain_unless_signalled_again(app: web.Application, timeout_s: float, stop: asyncio.Event) -> None:
    stop.clear()  # a second SIGTERM or Ctrl-C cuts the drain short
    drained = asyncio.create_task(_drain_before_exit(app, timeout_s))
    signalled = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([drained, signalled], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (drained, signalled):
            task.cancel()
        await asyncio.gather(drained, signalled, return_exceptions=True)


def create_app(settings: EdgeSettings) -> web.Application:
    app = web.Application(
        middlewares=[telemetry_middleware, cors_middleware, errors_middleware, subdomain_middleware],
        client_max_size=1 << 20,
    )
    app[keys.SETTINGS] = settings
    app.cleanup_ctx.append(_core)
    app.cleanup_ctx.append(_owned_task(_sync, "sync-loop"))
    app.cleanup_ctx.append(_owned_task(_drone, "drone"))
    app.cleanup_ctx.append(_owned_task(_replay, "journal-replay"))
    app.cleanup_ctx.append(_owned_task(_drain, "drain"))
    app.cleanup_ctx.append(_owned_task(_heartbeat_forever, "heartbeat"))
    app.router.add_get("/healthz", local_api.healthz)
    app.router.add_get("/v1/edge/status", local_api.status)
    app.router.add_post("/v1/connect", local_api.connect)
    app.router.add_get("/v1/backends/{backend_id}/logs", logs_api.backend_logs)
    app.router.add_get("/v1/status/{token}", status_stream.status_stream)
    app.router.add_get("/metrics", edge_telemetry.metrics)

    async def path_proxy(request: web.Request) -> web.StreamResponse:
        return await request.app[keys.PROXY].handle(request)

    # Any other first path segment is taken as a connection token (and refused with 401 if it is not one).
    app.router.add_route("*", "/{token}", path_proxy)
    app.router.add_route("*", "/{token}/{tail:.*}", path_proxy)
    return app


async def start_edge(settings: EdgeSettings) -> EdgeServer:
    """The edge app listening on settings.host:port: the fast path first, aiohttp for the rest."""
    app = create_app(settings)
    # handler_cancellation: a client gone mid-answer (a status stream, a proxied stream) ends its
    # handler at once, so its connection stops counting toward the cap and its upstream is freed.
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=settings.keepalive_timeout_s, handler_cancellation=True
    )
    await runner.setup()
    fast = FastPath(
        proxy=app[keys.PROXY],
        drone=app[keys.DRONE],
        activity=app[keys.ACTIVITY],
        limits=Limits(
            max_body_bytes=settings.max_body_bytes,
            head_timeout_s=settings.head_timeout_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_connections=settings.max_client_connections,
        ),
    )
    app[keys.PROXY].fast_path = fast
    app[keys.REPLICA].add_listener(fast.on_changes)
    assert runner.server is not None
    fast.hand_over = runner.server
    aiohttp_server = runner.server
    fast.handed_over = lambda: len(aiohttp_server.connections)
    app[TELEMETRY].watch_client_connections(fast.open_connections)
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: ClientProtocol(fast), settings.host, settings.port, reuse_address=True, backlog=1024
        )
    except BaseException:
        await runner.cleanup()
        raise
    return EdgeServer(app, runner, fast, server)


@dataclass
class EdgeServer:
    app: web.Application
    runner: web.AppRunner
    fast: FastPath
    server: asyncio.Server

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()
        self.fast.close()
        assert self.runner.server is not None
        await self.runner.server.shutdown(SHUTDOWN_REPORT_S)
        await self.runner.cleanup()


def serve(settings: EdgeSettings) -> None:
    """Blocking; SIGINT/SIGTERM shut down gracefully: backends stopped (or, with `on_exit = keep`
    or on SIGUSR2, left running for the next edge process to adopt), caches closed."""
    cap = settings.max_client_connections
    raise_soft_limit(needed_for(cap), f"max_client_connections={cap}")

    async def main() -> None:
        edge = await start_edge(settings)
        plan = edge.app[keys.EXIT_PLAN]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR2, _keep_and_stop(plan, stop))
        gc.freeze()  # what start-up allocated never needs collecting: shorter GC pauses under load
        try:
            await stop.wait()
            if settings.shutdown_drain_s > 0 and not plan.keep_backends:
                await _drain_unless_signalled_again(edge.app, settings.shutdown_drain_s, stop)
        finally:
            await edge.stop()
        if plan.keep_backends:
            # The event loop's subprocess transports kill their still-running children when they are
            # closed or collected (asyncio and uvloop alike): leave before anything tears them down.
            logging.shutdown()
            os._exit(0)

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
