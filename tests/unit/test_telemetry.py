"""sync/telemetry.py on its own: Prometheus names and rendering, the plain-number histogram, and
the trace context that travels in headers and in replicated rows."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.metrics import Observation
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from sync import telemetry


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_names_follow_the_otel_to_prometheus_rules() -> None:
    assert telemetry.prometheus_name("http.server.request.duration", "s") == "http_server_request_duration_seconds"
    assert telemetry.prometheus_name("meridian.sync.lag.seconds", "s") == "meridian_sync_lag_seconds"
    assert telemetry.prometheus_name("meridian.proxy.requests", "{request}") == "meridian_proxy_requests"


def test_histogram_buckets_are_cumulative_and_a_value_on_a_bound_is_in_that_bucket() -> None:
    tel = telemetry.Telemetry("unit", env={})
    histogram = tel.histogram("meridian.connect.duration", "s", "connects")
    for value in (0.001, 0.001, 0.02, 100.0):
        histogram.record(value, {"outcome": "spawned"})
    histogram.record(0.5, {"outcome": "existing"})
    samples = _samples(tel.prometheus().decode())
    bucket = "meridian_connect_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.001"), ("outcome", "spawned")))] == 2
    assert samples[(bucket, (("le", "0.025"), ("outcome", "spawned")))] == 3
    assert samples[(bucket, (("le", "60.0"), ("outcome", "spawned")))] == 3
    assert samples[(bucket, (("le", "+Inf"), ("outcome", "spawned")))] == 4
    assert samples[("meridian_connect_duration_seconds_count", (("outcome", "spawned"),))] == 4
    assert samples[("meridian_connect_duration_seconds_sum", (("outcome", "spawned"),))] == 100.022
    assert samples[("meridian_connect_duration_seconds_count", (("outcome", "existing"),))] == 1


def test_sdk_instruments_render_beside_the_histograms() -> None:
    tel = telemetry.Telemetry("unit", env={})
    tel.meter.create_observable_counter("meridian.proxy.requests", callbacks=[lambda _: [Observation(7)]])
    tel.meter.create_observable_gauge("meridian.backends", callbacks=[lambda _: [Observation(2, {"state": "ready"})]])
    active = telemetry.ActiveRequests(tel.meter)
    active.begin("GET")
    active.begin("GET")
    active.end("GET")
    samples = _samples(tel.prometheus().decode())
    assert samples[("meridian_proxy_requests_total", ())] == 7
    assert samples[("meridian_backends", (("state", "ready"),))] == 2
    assert samples[("http_server_active_requests", (("http_request_method", "GET"),))] == 1


def test_otlp_export_carries_the_histograms_in_the_sdks_own_scope() -> None:
    """An OTLP request holds each scope once; the histograms must join the SDK's, not shadow it."""
    tel = telemetry.Telemetry("unit", env={})
    tel.meter.create_observable_gauge("meridian.backends", callbacks=[lambda _: [Observation(1)]])
    tel.histogram("meridian.sync.apply.duration", "s", "apply").record(0.01, {"kind": "changes"})
    collected = tel._pull.get_metrics_data()
    assert collected is not None
    merged = tel._with_histograms(collected)
    scopes = [sm for rm in merged.resource_metrics for sm in rm.scope_metrics]
    assert [sm.scope.name for sm in scopes] == ["meridian"]
    assert {m.name for m in scopes[0].metrics} == {"meridian.backends", "meridian.sync.apply.duration"}


def test_nothing_is_exported_or_traced_without_an_endpoint() -> None:
    tel = telemetry.Telemetry("unit", env={})
    assert not tel.tracing and not tel.exporting_metrics
    assert telemetry.otlp_enabled("traces", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1"})
    assert not telemetry.otlp_enabled("metrics", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1"})
    assert not telemetry.otlp_enabled("traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_SDK_DISABLED": "true"})


def test_trace_context_rides_in_a_replicated_row_and_junk_is_no_context() -> None:
    row = {"id": "bk-1", "status": "scheduled"}
    assert telemetry.with_trace_context(row) == row, "nothing is added outside a trace"
    tracer = TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("connect") as span:
        body = telemetry.with_trace_context(row)
    context = telemetry.context_of(body[telemetry.TRACE_FIELD])
    assert context is not None
    assert trace.get_current_span(context).get_span_context().trace_id == span.get_span_context().trace_id
    for junk in (None, 42, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-" + "a" * 600):
        assert telemetry.context_of(junk) is None
    assert not trace.get_current_span(telemetry.extract({"traceparent": "00-" + "a" * 600})).get_span_context().is_valid
