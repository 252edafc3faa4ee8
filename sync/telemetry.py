"""OpenTelemetry for both processes: one `Telemetry` per application (never the global providers,
so several edges in one test process keep their numbers apart).

- Metrics are always kept (in memory) for `GET /metrics`, rendered in Prometheus text format.
- OTLP export (traces and metrics) exists only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or a per-signal
  `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`) is set; otherwise the tracer is a no-op and
  nothing runs in the background.
- Export happens on the SDK's worker threads. An endpoint that is down costs a request nothing;
  it is logged once when export starts failing and once when it recovers, never per batch.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Metric as OtelMetric
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from sync.timing import TELEMETRY_SHUTDOWN_S

log = logging.getLogger(__name__)

SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Histogram bounds for durations in seconds (the semantic conventions' advice, extended down to
0.5 ms for cache-hit connects and up to a minute for slow spawns)."""

_SIGNAL_ENDPOINTS = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
}
METER_NAME = "meridian"
_PROPAGATOR = TraceContextTextMapPropagator()
_MAX_TRACE_HEADER = 512
"""A longer `traceparent` is dropped unread (the SDK would log each one)."""
# The exporters log every failed batch at ERROR; our wrappers say it once per outage instead.
_NOISY_LOGGERS = ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal")


def otlp_enabled(signal: str, env: Mapping[str, str] = os.environ) -> bool:
    """Whether `signal` ("traces" or "metrics") is exported over OTLP."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or env.get(_SIGNAL_ENDPOINTS[signal], "").strip())


def _grpc(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower() == "grpc"


class _OutageLog:
    """Logs the first failure of a run of failures and the first success after it."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._failing = False
        self._lock = threading.Lock()

    def result(self, ok: bool) -> None:
        with self._lock:
            if ok == (not self._failing):
                return
            self._failing = not ok
        if ok:
            log.info("OTLP %s export recovered", self._what)
        else:
            log.warning("OTLP %s export failing (endpoint unreachable?); dropped until it recovers", self._what)


class QuietSpanExporter(SpanExporter):
    """Wraps the OTLP span exporter: one log line per outage; nothing sent once closing began."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._outage = _OutageLog("span")
        self.closing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.closing:
            return SpanExportResult.FAILURE
        try:
            result = self._inner.export(spans)
        except Exception:  # an exporter bug must not kill the worker thread
            result = SpanExportResult.FAILURE
        self._outage.result(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.closing = True
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class QuietMetricExporter(MetricExporter):
    """The same for the OTLP metric exporter."""

    def __init__(self, inner: MetricExporter, augment: Callable[[MetricsData], MetricsData]) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._augment = augment
        self._outage = _OutageLog("metric")
        self.closing = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.closing:
            return MetricExportResult.FAILURE
        try:
            result = self._inner.export(self._augment(metrics_data), timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        self._outage.result(result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.closing = True
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _span_exporter(env: Mapping[str, str]) -> SpanExporter:
    if _grpc(env):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_exporter(env: Mapping[str, str]) -> MetricExporter:
    if _grpc(env):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


class _Point:
    __slots__ = ("counts", "max", "min", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf


class FastHistogram:
    """A cumulative histogram kept in plain Python numbers: recording is a dict lookup, a bisect and
    a few additions (the SDK's own histogram costs some 20 times as much per recording). It is
    exported with the SDK's metrics, at `/metrics` and over OTLP, in the SDK's data model.

    Record from the event loop only; collection reads it from another thread, taking each point's
    count from the same copy of its buckets so a point is never inconsistent."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(bounds)
        self._points: dict[tuple[tuple[str, Any], ...], _Point] = {}
        self._start_ns = time.time_ns()

    def record(self, value: float, attributes: Mapping[str, Any]) -> None:
        key = tuple(attributes.items())
        point = self._points.get(key)
        if point is None:
            point = self._points[key] = _Point(len(self.bounds) + 1)
        point.counts[bisect.bisect_left(self.bounds, value)] += 1
        point.total += value
        if value < point.min:
            point.min = value
        if value > point.max:
            point.max = value

    def to_metric(self) -> OtelMetric | None:
        now = time.time_ns()
        points = []
        for key, point in list(self._points.items()):
            counts = list(point.counts)
            points.append(
                HistogramDataPoint(
                    attributes=dict(key),
                    start_time_unix_nano=self._start_ns,
                    time_unix_nano=now,
                    count=sum(counts),
                    sum=point.total,
                    bucket_counts=counts,
                    explicit_bounds=self.bounds,
                    min=point.min,
                    max=point.max,
                )
            )
        if not points:
            return None
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        return OtelMetric(name=self.name, description=self.description, unit=self.unit, data=data)


class Telemetry:
    """Meter and tracer of one process's application, plus its Prometheus rendering."""

    def __init__(self, service_name: str, attributes: Mapping[str, str] | None = None,
                 env: Mapping[str, str] = os.environ) -> None:  # fmt: skip
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name, **(attributes or {})})
        self.resource = resource
        self._histograms: list[FastHistogram] = []
        self._pull = InMemoryMetricReader()
        readers: list[MetricReader] = [self._pull]
        self._metric_exporter: QuietMetricExporter | None = None
        if otlp_enabled("metrics", env):
            self._metric_exporter = QuietMetricExporter(_metric_exporter(env), self._with_histograms)
            readers.append(PeriodicExportingMetricReader(self._metric_exporter))
        self.meter_provider = MeterProvider(
            metric_readers=readers,
            resource=resource,
            shutdown_on_exit=False,
            exemplar_filter=AlwaysOffExemplarFilter(),  # exemplars cost a context lookup per recording
        )
        self.meter = self.meter_provider.get_meter(METER_NAME)
        self.exporting_metrics = self._metric_exporter is not None
        self._span_exporter: QuietSpanExporter | None = None
        self.tracer_provider: TracerProvider | None = None
        self.tracer: Tracer = trace.NoOpTracer()
        if otlp_enabled("traces", env):
            self._span_exporter = QuietSpanExporter(_span_exporter(env))
            self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(self._span_exporter))
            self.tracer = self.tracer_provider.get_tracer(METER_NAME)
        self.tracing = self.tracer_provider is not None
        if self.tracing or self.exporting_metrics:
            for name in _NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_PullCollector(self._pull, self._histograms))

    def histogram(self, name: str, unit: str, description: str) -> FastHistogram:
        """A histogram of durations (seconds), cheap to record, exported with everything else."""
        histogram = FastHistogram(name, unit, description)
        self._histograms.append(histogram)
        return histogram

    def _with_histograms(self, data: MetricsData) -> MetricsData:
        """What the SDK collected plus our histograms, in the same scope (an OTLP request holds a
        scope once: a second one of the same name would replace the first)."""
        metrics = [m for m in (h.to_metric() for h in self._histograms) if m is not None]
        if not metrics:
            return data
        resources = list(data.resource_metrics) or [ResourceMetrics(self.resource, [], "")]
        first = resources[0]
        scopes = list(first.scope_metrics)
        at = next((i for i, sm in enumerate(scopes) if sm.scope.name == METER_NAME), None)
        if at is None:
            scopes.append(ScopeMetrics(InstrumentationScope(METER_NAME), metrics, ""))
        else:
            scopes[at] = ScopeMetrics(scopes[at].scope, [*scopes[at].metrics, *metrics], scopes[at].schema_url)
        resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics=resources)

    def prometheus(self) -> bytes:
        """Every metric in Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self._registry)

    def shutdown(self, timeout_s: float = TELEMETRY_SHUTDOWN_S) -> None:
        """Blocking (call it off the event loop): the last export, abandoned after `timeout_s`."""
        done = threading.Event()

        def last_export() -> None:
            try:
                if self.tracer_provider is not None:
                    self.tracer_provider.shutdown()
                self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
            finally:
                done.set()

        threading.Thread(target=last_export, name="telemetry-shutdown", daemon=True).start()
        if not done.wait(timeout_s):
            for exporter in (self._span_exporter, self._metric_exporter):
                if exporter is not None:
                    exporter.closing = True
            log.info("telemetry: the last export did not finish in %.1fs; abandoned", timeout_s)


class ActiveRequests:
    """`http.server.active_requests` kept in plain integers per method and observed at collection:
    an SDK up-down counter would cost two recordings per request."""

    def __init__(self, meter: Meter) -> None:
        self._by_method: dict[str, int] = {}
        meter.create_observable_up_down_counter(
            "http.server.active_requests",
            callbacks=[self._observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    def begin(self, method: str) -> None:
        self._by_method[method] = self._by_method.get(method, 0) + 1

    def end(self, method: str) -> None:
        self._by_method[method] -= 1

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"http.request.method": m}) for m, n in list(self._by_method.items())]


# ---- trace context ----------------------------------------------------------------------------


def extract(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from `traceparent` (a malformed one is ignored). `tracestate` is
    not read: Meridian uses none, and the SDK logs each invalid entry, which a client controls."""
    traceparent = headers.get("traceparent")
    if not traceparent or len(traceparent) > _MAX_TRACE_HEADER:
        return Context()
    return _PROPAGATOR.extract({"traceparent": traceparent})


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Add `traceparent` (and `tracestate`) for the current span, when there is one."""
    _PROPAGATOR.inject(headers, context=context)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


TRACE_FIELD = "traceparent"
"""The field of a replicated backend that names the trace of the connect which created it, so the
edge that spawns it adds its spawn span to that trace. Only the first change row carries it."""


def with_trace_context(body: Any) -> dict[str, Any]:
    """`body` (a mapping or a database record) with the current span's `traceparent` added, as it
    is when nothing is traced."""
    traceparent = current_traceparent()
    return dict(body) if traceparent is None else {**body, TRACE_FIELD: traceparent}


def context_of(traceparent: object) -> Context | None:
    """The context a stored `traceparent` names, or None when it is absent or not one."""
    if not isinstance(traceparent, str) or len(traceparent) > 128:
        return None
    context = extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


# ---- Prometheus rendering -----------------------------------------------------------------------

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


def prometheus_name(name: str, unit: str) -> str:
    """OTel name → Prometheus name: dots to underscores, the unit as a suffix (`{request}` units,
    being annotations, add nothing), as the OTel-to-Prometheus compatibility rules do."""
    base = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit)
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    return base


def _labels(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    return {_INVALID.sub("_", k): str(v) for k, v in (attributes or {}).items()}


class _PullCollector:
    """A prometheus_client collector reading the in-memory OTel reader at each scrape."""

    def __init__(self, reader: InMemoryMetricReader, histograms: list[FastHistogram]) -> None:
        self._reader = reader
        self._histograms = histograms

    def collect(self) -> Iterator[Metric]:
        data = self._reader.get_metrics_data()
        collected = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics] if data else []
        collected += [m for m in (h.to_metric() for h in self._histograms) if m is not None]
        for otel in collected:
            metric = _convert(otel.name, otel.unit or "", otel.description or "", otel.data)
            if metric is not None:
                yield metric


def _convert(name: str, unit: str, description: str, data: object) -> Metric | None:
    pname = prometheus_name(name, unit)
    if isinstance(data, Sum):
        if data.is_monotonic:
            metric = Metric(pname, description, "counter")
            for point in data.data_points:
                metric.add_sample(pname + "_total", _labels(point.attributes), float(point.value))
        else:
            metric = Metric(pname, description, "gauge")
            for point in data.data_points:
                metric.add_sample(pname, _labels(point.attributes), float(point.value))
        return metric
    if isinstance(data, Gauge):
        metric = Metric(pname, description, "gauge")
        for point in data.data_points:
            metric.add_sample(pname, _labels(point.attributes), float(point.value))
        return metric
    if isinstance(data, Histogram):
        metric = Metric(pname, description, "histogram")
        for hpoint in data.data_points:
            labels = _labels(hpoint.attributes)
            for le, cumulative in _cumulative_buckets(hpoint.explicit_bounds, hpoint.bucket_counts):
                metric.add_sample(pname + "_bucket", {**labels, "le": le}, float(cumulative))
            metric.add_sample(pname + "_count", labels, float(hpoint.count))
            metric.add_sample(pname + "_sum", labels, float(hpoint.sum))
        return metric
    return None


def _cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> Iterable[tuple[str, int]]:
    total = 0
    for i, count in enumerate(counts):
        total += count
        yield (repr(float(bounds[i])) if i < len(bounds) else "+Inf"), total
