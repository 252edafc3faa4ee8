"""What telemetry costs per request, measured in-process against a baseline in the same run.

    python -m bench.telemetry_overhead [--calls 200000]

  activity      `Activity.begin` + `end` (what the proxy's fast path calls once per request) as
                built, against the same two methods without the `started` counter.
  middleware    the control plane's ASGI middleware around a trivial ASGI app (no network): the app
                alone, the middleware with OTLP off (metrics only), and with tracing on (spans
                recorded by the SDK, exported by a no-op exporter on its worker thread).
  render        one `/metrics` rendering (collect + Prometheus text) after the middleware runs.

Prints JSON: nanoseconds per call (median of `--rounds` rounds; the variants take turns so machine
noise hits them alike) and what each variant adds to its baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from starlette.types import ASGIApp

from control.telemetry import ControlTelemetry, TelemetryMiddleware
from edge.activity import Activity
from sync.telemetry import Telemetry


class _UncountedActivity(Activity):
    """`Activity` as it was before the request counter: the baseline."""

    def begin(self, backend_id: str) -> None:
        self._open[backend_id] = self._open.get(backend_id, 0) + 1
        self._last[backend_id] = time.monotonic()


def _per_call_ns(fn: Callable[[], None], calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - started) / calls


def bench_activity(calls: int, rounds: int) -> dict[str, Any]:
    counted, baseline = Activity(), _UncountedActivity()

    def with_counter() -> None:
        counted.begin("bk-1")
        counted.end("bk-1")

    def without() -> None:
        baseline.begin("bk-1")
        baseline.end("bk-1")

    runs: dict[str, list[float]] = {"baseline": [], "counted": []}
    for _ in range(rounds):
        runs["baseline"].append(_per_call_ns(without, calls))
        runs["counted"].append(_per_call_ns(with_counter, calls))
    return _summary(runs, "baseline")


class _DropSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _trivial_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _traced_telemetry() -> ControlTelemetry:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    base = Telemetry("bench", env={})
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
    base.tracer_provider, base.tracer, base.tracing = provider, provider.get_tracer("bench"), True
    return ControlTelemetry(base)


async def bench_middleware(calls: int, rounds: int) -> tuple[dict[str, Any], float]:
    untraced = ControlTelemetry(Telemetry("bench", env={}))
    traced = _traced_telemetry()
    apps: dict[str, ASGIApp] = {
        "app alone": _trivial_app,
        "metrics only": TelemetryMiddleware(_trivial_app, untraced),
        "metrics and spans": TelemetryMiddleware(_trivial_app, traced),
    }
    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": [(b"traceparent", b"bad")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: Any) -> None:
        return None

    runs: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            started = time.perf_counter_ns()
            for _ in range(calls):
                await app(dict(scope), receive, send)
            runs[name].append((time.perf_counter_ns() - started) / calls)
    started = time.perf_counter_ns()
    untraced.base.prometheus()
    render_ms = (time.perf_counter_ns() - started) / 1e6
    traced.base.tracer_provider.shutdown()  # type: ignore[union-attr]
    return _summary(runs, "app alone"), render_ms


def _summary(runs: dict[str, list[float]], baseline: str) -> dict[str, Any]:
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "ns_per_call": {name: round(v, 1) for name, v in medians.items()},
        "added_ns": {name: round(v - medians[baseline], 1) for name, v in medians.items() if name != baseline},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    activity = bench_activity(args.calls, args.rounds)
    middleware, render_ms = asyncio.run(bench_middleware(args.calls // 10, args.rounds))
    print(json.dumps({"activity": activity, "middleware": middleware, "render_ms": round(render_ms, 3)}, indent=2))


if __name__ == "__main__":
    main()
