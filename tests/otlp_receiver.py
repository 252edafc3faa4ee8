"""A real OTLP/HTTP receiver on loopback (what a collector listens on at :4318): it decodes the
protobuf bodies of `/v1/traces` and `/v1/metrics` with `opentelemetry-proto` and keeps them, so a
test can wait for the spans and metrics the processes under test exported."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

T = TypeVar("T")


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes(kvs: list[KeyValue]) -> dict[str, object]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, object]

    @property
    def is_server(self) -> bool:
        return self.kind == ProtoSpan.SPAN_KIND_SERVER

    @property
    def is_client(self) -> bool:
        return self.kind == ProtoSpan.SPAN_KIND_CLIENT


class OtlpReceiver:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._metric_names: dict[str, set[str]] = {}
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/v1/traces":
                    receiver._take_traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._take_metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _take_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            service = str(attributes(list(resource_spans.resource.attributes)).get("service.name"))
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    spans.append(
                        ReceivedSpan(
                            service=service,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            attributes=attributes(list(s.attributes)),
                        )
                    )
        with self._lock:
            self.raw.append(body)
            self._spans.extend(spans)
            self._lock.notify_all()

    def _take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        with self._lock:
            self.raw.append(body)
            for resource_metrics in request.resource_metrics:
                service = str(attributes(list(resource_metrics.resource.attributes)).get("service.name"))
                names = self._metric_names.setdefault(service, set())
                for scope in resource_metrics.scope_metrics:
                    names.update(m.name for m in scope.metrics)
            self._lock.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def metric_names(self, service: str) -> set[str]:
        with self._lock:
            return set(self._metric_names.get(service, ()))

    def wait_for(self, found: Callable[[OtlpReceiver], T | None], timeout_s: float = 30.0) -> T:
        """The first non-None `found(self)`, re-checked on every export received."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                result = found(self)
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not received within {timeout_s}s; spans: {self._summary()}")
                self._lock.wait(left)

    def _summary(self) -> list[str]:
        return [f"{s.service}:{s.name}" for s in self._spans][-40:]


def trace_of(spans: list[ReceivedSpan], trace_id: str) -> Iterator[ReceivedSpan]:
    return (s for s in spans if s.trace_id == trace_id)
