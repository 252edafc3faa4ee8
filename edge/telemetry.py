"""The edge's telemetry: HTTP server spans and metrics for the aiohttp application, the client span
and `traceparent` of a connect forwarded to the control plane, spawn spans (children of the
connect that created the backend, whose trace context arrives with the backend's first change
row), sync-apply spans, and the gauges of proxy, backends, sync and journal.

The proxy's fast path is not instrumented per request: it already counts with plain integers
(`Activity`), and those are read by observable instruments only when metrics are collected.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST

from edge import keys
from edge.access import api_caller
from edge.activity import Activity
from edge.drone import Drone
from edge.executors import Executor, ExecutorStatus, ExecutorUnavailable, SpawnRequest, StartRefused
from edge.replica import Replica
from sync import telemetry
from sync.client import SnapshotObject
from sync.errors import MeridianError
from sync.loop import SyncLoop
from sync.models import BackendStatus, ChangesReply, Scope, TerminationReason

SERVICE_NAME = "meridian-edge"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Admin always passes; `observer` is the dashboard's read-only scope.
METRICS_SCOPES = (Scope.EDGE, Scope.OBSERVER)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EdgeTelemetry:
    """Instruments of one edge application."""

    def __init__(self, region: str, node_id: str, base: telemetry.Telemetry | None = None) -> None:
        self.base = base or telemetry.Telemetry(
            SERVICE_NAME, {"service.instance.id": node_id, "meridian.region": region}
        )
        self.tracer = self.base.tracer
        self.tracing = self.base.tracing
        meter = self.base.meter
        self.request_duration = self.base.histogram(
            "http.server.request.duration",
            "s",
            "Duration of HTTP server requests (the edge's API and the full proxy path).",
        )
        self.active_requests = telemetry.ActiveRequests(meter)
        self.connect_duration = self.base.histogram(
            "meridian.connect.duration",
            "s",
            "Connect latency at the edge, by outcome (replica, forwarded, or the error code).",
        )
        self.spawn_duration = self.base.histogram(
            "meridian.backend.spawn.duration",
            "s",
            "From the edge starting a backend to its readiness probe passing (or failing).",
        )
        self.start_step_duration = self.base.histogram(
            "meridian.backend.start_step.duration",
            "s",
            "Steps of a new backend's start on this node, by `step`: assign (the connect's transaction → this "
            "node saw the assignment), claim (warm-pool claim calls, by `outcome`), ready (assignment seen → "
            "ready, by `pooled`).",
        )
        self.ready_wait_duration = self.base.histogram(
            "meridian.proxy.ready_wait.duration",
            "s",
            "How long a proxied request waited for its backend to be known here and ready (requests that waited).",
        )
        self.sync_apply_duration = self.base.histogram(
            "meridian.sync.apply.duration", "s", "Time to apply one sync reply (changes) or snapshot to the replica."
        )
        self._activity: Activity | None = None
        self._drone: Drone | None = None
        self._loop: SyncLoop | None = None
        self._replica: Replica | None = None
        self._client_connections: Callable[[], int] | None = None
        self._journal_pending: Callable[[], int] | None = None
        self._observables(meter)

    def _observables(self, meter: Any) -> None:
        gauges: list[tuple[str, Any, str, str]] = [
            ("meridian.proxy.open_connections", self._open, "{connection}",
             "Proxied exchanges in flight: HTTP requests being answered and WebSocket sessions."),
            ("meridian.edge.client_connections", self._clients, "{connection}",
             "Open client connections on the edge's port (fast path and aiohttp)."),
            ("meridian.backends", self._backends, "{backend}", "Backends this node runs (not terminated), by state."),
            ("meridian.sync.applied_version", self._applied, "{version}", "Version the replica holds."),
            ("meridian.sync.reachable", self._reachable, "1", "1 while the control plane answers the sync loop."),
            ("meridian.sync.staleness", self._staleness, "s",
             "Seconds since the last applied sync reply while the control plane is unreachable; 0 while it "
             "answers (an answering long-poll is woken within milliseconds of each commit)."),
            ("meridian.journal.pending", self._journal, "{entry}",
             "Offline journal entries not yet reconciled with the control plane."),
        ]  # fmt: skip
        for name, callback, unit, description in gauges:
            meter.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)
        counters: list[tuple[str, Any, str, str]] = [
            ("meridian.proxy.requests", self._requests, "{request}",
             "Proxied HTTP requests and WebSocket sessions (fast path and full path)."),
            ("meridian.sync.replies", self._loop_counter("replies"), "{reply}", "Sync replies applied."),
            ("meridian.sync.snapshots", self._loop_counter("snapshots"), "{snapshot}", "Snapshots applied."),
            ("meridian.sync.resyncs", self._loop_counter("resyncs"), "{resync}",
             "Gaps, epoch changes or 410s that sent the sync loop back to a snapshot."),
            ("meridian.sync.failures", self._loop_counter("failures"), "{failure}", "Failed sync attempts."),
        ]  # fmt: skip
        for name, callback, unit, description in counters:
            meter.create_observable_counter(name, callbacks=[callback], unit=unit, description=description)

    # ---- wiring -----------------------------------------------------------------------------

    def watch(self, *, activity: Activity, drone: Drone, loop: SyncLoop, replica: Replica) -> None:
        self._activity, self._drone, self._loop, self._replica = activity, drone, loop, replica

    def watch_client_connections(self, count: Callable[[], int]) -> None:
        self._client_connections = count

    def watch_journal(self, pending: Callable[[], int]) -> None:
        """The offline journal's hook: `pending()` is read (on the collecting thread or loop, so it
        must not block) whenever metrics are collected."""
        self._journal_pending = pending

    def traced_sink(self, sink: Replica) -> TracedSink:
        return TracedSink(sink, self)

    def traced_executor(self, executor: Executor, replica: Replica) -> TracedExecutor:
        return TracedExecutor(executor, replica, self)

    def shutdown(self) -> None:
        self.base.shutdown()

    # ---- callbacks (no I/O) -----------------------------------------------------------------

    def _open(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self._activity is None else [Observation(self._activity.total_open())]

    def _requests(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self._activity is None else [Observation(self._activity.started)]

    def _clients(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self._client_connections is None else [Observation(self._client_connections())]

    def _backends(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._drone is None:
            return []
        counts = dict.fromkeys((BackendStatus.STARTING, BackendStatus.READY, BackendStatus.DRAINING), 0)
        for local in list(self._drone.local.values()):
            if local.status in counts:
                counts[local.status] += 1
        return [Observation(n, {"state": state.value}) for state, n in counts.items()]

    def _applied(self, _: CallbackOptions) -> Iterable[Observation]:
        version = None if self._replica is None else self._replica.applied_version
        return [] if version is None else [Observation(version)]

    def _reachable(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self._loop is None else [Observation(int(self._loop.reachable))]

    def _staleness(self, _: CallbackOptions) -> Iterable[Observation]:
        loop = self._loop
        if loop is None or loop.last_sync_at is None:
            return []
        if loop.reachable:
            return [Observation(0.0)]
        return [Observation((datetime.now(UTC) - loop.last_sync_at).total_seconds())]

    def _journal(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self._journal_pending is None else [Observation(self._journal_pending())]

    def _loop_counter(self, attribute: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [] if self._loop is None else [Observation(getattr(self._loop, attribute))]

        return observe


TELEMETRY = web.AppKey("telemetry", EdgeTelemetry)


# ---- HTTP server ----------------------------------------------------------------------------


def _route(request: web.Request) -> str | None:
    """The matched route's template (`/{token}/{tail}`), never the path (it holds tokens)."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    tel = request.app.get(TELEMETRY)
    if tel is None:
        return await handler(request)
    method = request.method if request.method in KNOWN_METHODS else "_OTHER"
    started = time.perf_counter()
    status = 500
    tel.active_requests.begin(method)
    try:
        if tel.tracing:
            response = await _traced(tel, request, handler, method)
        else:
            response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        tel.active_requests.end(method)
        attributes: dict[str, Any] = {"http.request.method": method, "http.response.status_code": status}
        route = _route(request)
        if route is not None:
            attributes["http.route"] = route
        tel.request_duration.record(time.perf_counter() - started, attributes)


async def _traced(tel: EdgeTelemetry, request: web.Request, handler: Handler, method: str) -> web.StreamResponse:
    parent = telemetry.extract({"traceparent": request.headers.get("traceparent", "")})
    route = _route(request)
    with tel.tracer.start_as_current_span(
        f"{method} {route}" if route else method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.scheme": request.scheme},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if route is not None:
            span.set_attribute("http.route", route)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))


# ---- connect --------------------------------------------------------------------------------


@dataclass
class ConnectOutcome:
    value: str = "error"


@contextlib.contextmanager
def connect_outcome(app: web.Application) -> Iterator[ConnectOutcome]:
    """Times a connect at the edge; the caller sets `replica` or `forwarded`, an API error its code."""
    tel = app.get(TELEMETRY)
    outcome = ConnectOutcome()
    started = time.perf_counter()
    try:
        yield outcome
    except MeridianError as exc:
        outcome.value = exc.code
        raise
    finally:
        if tel is not None:
            tel.connect_duration.record(time.perf_counter() - started, {"outcome": outcome.value})


@contextlib.contextmanager
def control_call(app: web.Application, name: str, headers: dict[str, str]) -> Iterator[None]:
    """A CLIENT span around a call to the control plane, its context added to `headers`."""
    tel = app.get(TELEMETRY)
    if tel is None or not tel.tracing:
        yield
        return
    with tel.tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes={"http.request.method": name.split(" ", 1)[0]}
    ):
        telemetry.inject(headers)
        yield


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus text, for admin, edge and observer tokens."""
    api_caller(request.app[keys.REPLICA], request.headers.get("Authorization"), *METRICS_SCOPES)
    body = request.app[TELEMETRY].base.prometheus()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---- sync apply -----------------------------------------------------------------------------


class TracedSink:
    """The replica as the sync loop sees it, with a span and a duration per applied reply that
    changed something, and per snapshot. Anything else is the replica's own."""

    def __init__(self, inner: Replica, tel: EdgeTelemetry) -> None:
        self._inner = inner
        self._tel = tel

    @property
    def applied_version(self) -> int | None:
        return self._inner.applied_version

    @property
    def epoch(self) -> str | None:
        return self._inner.epoch

    async def apply_changes(self, reply: ChangesReply) -> None:
        if not reply.changes:
            await self._inner.apply_changes(reply)
            return
        attributes = {"meridian.sync.from": reply.from_, "meridian.sync.to": reply.to,
                      "meridian.sync.changes": len(reply.changes)}  # fmt: skip
        async with self._applying("changes", attributes):
            await self._inner.apply_changes(reply)

    async def apply_snapshot(self, epoch: str, version: int, objects: AsyncIterator[SnapshotObject]) -> None:
        async with self._applying("snapshot", {"meridian.sync.to": version}):
            await self._inner.apply_snapshot(epoch, version, objects)

    @contextlib.asynccontextmanager
    async def _applying(self, kind: str, attributes: Mapping[str, Any]) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            with self._tel.tracer.start_as_current_span(
                "meridian.sync.apply", attributes={"meridian.sync.kind": kind, **attributes}
            ):
                yield
        finally:
            self._tel.sync_apply_duration.record(time.perf_counter() - started, {"kind": kind})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ---- spawn ----------------------------------------------------------------------------------


def _traceparent_of(backend: object) -> object:
    if isinstance(backend, Mapping):
        return backend.get(telemetry.TRACE_FIELD)
    return getattr(backend, telemetry.TRACE_FIELD, None)


class TracedExecutor:
    """The executor with a spawn span (in the trace of the connect that created the backend) and a
    spawn-duration sample around `start`; everything else is the executor's own."""

    def __init__(self, inner: Executor, replica: Replica, tel: EdgeTelemetry) -> None:
        self._inner = inner
        self._replica = replica
        self._tel = tel
        self.kind = inner.kind

    async def start(self, req: SpawnRequest) -> str:
        parent = telemetry.context_of(req.traceparent or _traceparent_of(self._replica.backend(req.backend_id)))
        attributes = {"meridian.backend.id": req.backend_id, "meridian.template.id": req.template_id,
                      "meridian.executor": req.template.executor, "meridian.region": req.region}  # fmt: skip
        outcome = "failed"
        started = time.perf_counter()
        with self._tel.tracer.start_as_current_span(
            "meridian.backend.spawn", context=parent, attributes=attributes, record_exception=False
        ) as span:
            try:
                address = await self._inner.start(req)
                outcome = "ready"
                return address
            except StartRefused:
                outcome = "refused"
                raise
            except ExecutorUnavailable:
                outcome = "unavailable"
                raise
            finally:
                span.set_attribute("meridian.spawn.outcome", outcome)
                if outcome != "ready":
                    span.set_status(Status(StatusCode.ERROR))
                self._tel.spawn_duration.record(
                    time.perf_counter() - started, {"executor": req.template.executor, "outcome": outcome}
                )

    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None:
        await self._inner.stop(backend_id, hard=hard, reason=reason)

    def status(self, backend_id: str) -> ExecutorStatus:
        return self._inner.status(backend_id)

    async def rekey(self, member_id: str, req: SpawnRequest) -> bool:
        return await self._inner.rekey(member_id, req)

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
