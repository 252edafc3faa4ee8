"""The control plane's telemetry: HTTP server spans and metrics (an ASGI middleware), PostgreSQL
spans (asyncpg's query logger, registered only while tracing), connect outcomes, the fleet gauges
of `control/telemetry_fleet.py`, and `GET /metrics` for admin, edge and observer tokens.

Route attributes use the route template (`/v1/backends/{backend_id}`), never the raw path, so no
id or token reaches a label or span name and the number of series stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.http.deps import requires
from control.loop_service import LoopService
from control.loop_service import running as running_services
from control.telemetry_fleet import FleetGauges
from sync import telemetry
from sync.errors import MeridianError
from sync.models import Scope as TokenScope
from sync.timing import METRICS_REFRESH_S

log = logging.getLogger(__name__)

SERVICE_NAME = "meridian-control"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
MAX_QUERY_TEXT = 2048
_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)")
# Admin always passes; `observer` is the dashboard's read-only scope.
METRICS_SCOPES = (TokenScope.EDGE, TokenScope.OBSERVER)


class ControlTelemetry:
    """Instruments of one control-plane application."""

    def __init__(self, base: telemetry.Telemetry | None = None) -> None:
        self.base = base or telemetry.Telemetry(SERVICE_NAME)
        meter = self.base.meter
        self.tracer = self.base.tracer
        self.tracing = self.base.tracing
        self.request_duration = self.base.histogram(
            "http.server.request.duration", "s", "Duration of HTTP server requests."
        )
        self.active_requests = telemetry.ActiveRequests(meter)
        self.connect_duration = self.base.histogram(
            "meridian.connect.duration",
            "s",
            "Connect latency at the control plane, by outcome (existing, spawned, or the error code).",
        )
        self.fleet = FleetGauges(meter)

    def on_db_connection(self, conn: asyncpg.Connection) -> None:
        """Pool `init` hook: a span per statement, while tracing (no logger, no cost, otherwise)."""
        if self.tracing:
            conn.add_query_logger(self._query_span)

    def _query_span(self, record: Any) -> None:
        # asyncpg calls this with call_soon in the querying task's context: the current span is the
        # request's, so the statement becomes its child. Times are reconstructed from `elapsed`.
        # Statements outside any trace (background loops, migrations) make no root spans of their own.
        if not trace.get_current_span().get_span_context().is_valid:
            return
        end = time.time_ns()
        text: str = record.query
        first = _FIRST_WORD.match(text)
        operation = first.group(1).upper() if first else "QUERY"
        attributes: dict[str, Any] = {
            "db.system.name": "postgresql",
            "db.operation.name": operation,
            "db.query.text": text[:MAX_QUERY_TEXT],
        }
        address = record.conn_addr
        if isinstance(address, tuple) and len(address) == 2:
            attributes["server.address"], attributes["server.port"] = str(address[0]), int(address[1])
        span = self.tracer.start_span(
            operation, kind=SpanKind.CLIENT, start_time=end - int(record.elapsed * 1e9), attributes=attributes
        )
        if record.exception is not None:
            span.set_attribute("error.type", type(record.exception).__name__)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    def shutdown(self) -> None:
        self.base.shutdown()


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class TelemetryMiddleware:
    """Outermost ASGI middleware: one SERVER span (child of the caller's `traceparent`) and the
    semantic-convention HTTP metrics per request. It never changes what the app answers."""

    def __init__(self, app: ASGIApp, telemetry: ControlTelemetry) -> None:
        self.app = app
        self.tel = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "_OTHER"
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.tel.active_requests.begin(method)
        try:
            if self.tel.tracing:
                await self._traced(scope, receive, send_status, method, lambda: status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.tel.active_requests.end(method)
            attributes: dict[str, Any] = {"http.request.method": method, "http.response.status_code": status}
            route = _route(scope)
            if route is not None:
                attributes["http.route"] = route
            self.tel.request_duration.record(time.perf_counter() - started, attributes)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, method: str, status: Callable[[], int]) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"traceparent"}
        with self.tel.tracer.start_as_current_span(
            method,
            context=telemetry.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                route = _route(scope)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status())
                if status() >= 500:
                    span.set_status(Status(StatusCode.ERROR))


@dataclass
class ConnectOutcome:
    value: str = "error"


@asynccontextmanager
async def connect_outcome(request: Request) -> AsyncIterator[ConnectOutcome]:
    """Times a connect; the caller sets `existing` or `spawned`, an API error records its code."""
    tel: ControlTelemetry | None = getattr(request.app.state, "telemetry", None)
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


router = APIRouter()


@router.get("/metrics", include_in_schema=False, dependencies=[requires(*METRICS_SCOPES)])
async def metrics(request: Request) -> Response:
    tel: ControlTelemetry = request.app.state.telemetry
    await tel.fleet.refresh(request.app.state.control.pool)
    return Response(tel.base.prometheus(), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def running(tel: ControlTelemetry, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """While the app runs: fleet gauges kept fresh for OTLP export; on the way out, the last export
    (bounded, off the event loop)."""
    services = []
    if tel.base.exporting_metrics:
        services.append(LoopService("fleet-gauges", METRICS_REFRESH_S, lambda: tel.fleet.refresh(pool), run_first=True))
    try:
        async with running_services(*services):
            yield
    finally:
        await asyncio.to_thread(tel.shutdown)


def install(app: FastAPI) -> ControlTelemetry:
    """Add the middleware (outermost) and `/metrics`; the lifespan starts and stops the rest."""
    tel = ControlTelemetry()
    app.state.telemetry = tel
    app.add_middleware(TelemetryMiddleware, telemetry=tel)
    app.include_router(router)
    return tel
