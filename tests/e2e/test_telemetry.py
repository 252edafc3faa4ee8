"""OpenTelemetry across real processes: a dev cluster (control plane and an edge, each its own
process) exporting over OTLP/HTTP to a receiver this test runs on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from meridian.dev import DevCluster, free_port_block
from tests.e2e.conftest import ADMIN
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, trace_of

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_cluster(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    with pytest.MonkeyPatch.context() as env:  # inherited by the cluster's processes
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        env.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
        dev = DevCluster(["eu-west"], free_port_block(2), Path(tmp_path_factory.mktemp("dev")), ADMIN)
        try:
            dev.start()
            yield dev
        finally:
            dev.stop()


def _spawn_trace(backend_id: str) -> Callable[[OtlpReceiver], list[ReceivedSpan] | None]:
    """The spans of the trace holding the spawn of `backend_id`, once the connect's are all in."""

    def found(receiver: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = receiver.spans()
        spawn = [s for s in spans if s.attributes.get("meridian.backend.id") == backend_id]
        if not spawn:
            return None
        trace = list(trace_of(spans, spawn[0].trace_id))
        services = {(s.service, s.name) for s in trace}
        wanted = {("meridian-edge", "POST /v1/connect"), ("meridian-control", "POST /v1/connect")}
        db = [s for s in trace if s.attributes.get("db.system.name") == "postgresql"]
        return trace if wanted <= services and db else None

    return found


def _one(spans: list[ReceivedSpan], **match: object) -> ReceivedSpan:
    hits = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, [(s.service, s.name, s.kind) for s in spans])
    return hits[0]


def test_a_connect_through_an_edge_is_one_trace_across_edge_control_plane_and_postgresql(
    traced_cluster: DevCluster, receiver: OtlpReceiver
) -> None:
    edge = traced_cluster.edge_url(0)
    r = httpx.post(f"{edge}/v1/connect", json={"key": "traced", "template": "demo"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spawned"] is True
    assert httpx.get(body["url"] + "info", timeout=30).status_code == 200  # the backend is ready

    trace = receiver.wait_for(_spawn_trace(body["backend_id"]))

    edge_server = _one(trace, service="meridian-edge", name="POST /v1/connect", kind=2)
    assert edge_server.parent_id == "", "the edge's connect span is the root: the client sent no traceparent"
    edge_client = _one(trace, service="meridian-edge", kind=3)
    control_server = _one(trace, service="meridian-control", name="POST /v1/connect")
    assert edge_client.parent_id == edge_server.span_id
    assert control_server.parent_id == edge_client.span_id, "traceparent carried the edge's context across"
    assert control_server.attributes["http.route"] == "/v1/connect"
    assert control_server.attributes["http.response.status_code"] == 200
    statements = [s for s in trace if s.attributes.get("db.system.name") == "postgresql"]
    assert {s.service for s in statements} == {"meridian-control"}
    assert {"BEGIN", "INSERT", "COMMIT"} <= {s.name for s in statements}
    assert all(s.parent_id == control_server.span_id for s in statements)
    spawn = _one(trace, service="meridian-edge", name="meridian.backend.spawn")
    assert spawn.parent_id == control_server.span_id, "the spawn joins the trace of the connect that made it"
    assert spawn.attributes["meridian.spawn.outcome"] == "ready"

    # The backend reached the edge as a sync reply; applying it is a span of its own.
    def applied(rx: OtlpReceiver) -> ReceivedSpan | None:
        return next((s for s in rx.spans() if s.name == "meridian.sync.apply" and s.service == "meridian-edge"
                     and s.attributes.get("meridian.sync.kind") == "changes"), None)  # fmt: skip

    apply = receiver.wait_for(applied)
    assert int(str(apply.attributes["meridian.sync.changes"])) >= 1


def test_a_client_traceparent_is_continued_and_a_malformed_one_ignored(
    traced_cluster: DevCluster, receiver: OtlpReceiver
) -> None:
    edge = traced_cluster.edge_url(0)
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {**AUTH, "traceparent": f"00-{trace_id}-{parent}-01"}
    r = httpx.post(f"{edge}/v1/connect", json={"key": "continued", "template": "demo"}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text

    def both_sides(rx: OtlpReceiver) -> list[ReceivedSpan] | None:
        trace = list(trace_of(rx.spans(), trace_id))
        return trace if {"meridian-edge", "meridian-control"} <= {s.service for s in trace} else None

    trace = receiver.wait_for(both_sides)
    assert _one(trace, service="meridian-edge", name="POST /v1/connect", kind=2).parent_id == parent

    for bad in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-" + "a" * 4000):
        attack = {"traceparent": bad, "tracestate": "bad key=v" + ",x=y" * 40}
        r = httpx.post(f"{edge}/v1/connect", json={"key": "continued", "template": "demo"},
                       headers={**AUTH, **attack}, timeout=30)  # fmt: skip
        assert r.status_code == 200, (bad[:20], r.text)
        r = httpx.get(f"{traced_cluster.control_url}/healthz", headers=attack, timeout=30)
        assert r.status_code == 200
    logs = "".join(p.read_text() for p in (traced_cluster.data_dir / "logs").iterdir())
    assert "opentelemetry" not in logs, "what a client sends in trace headers must not reach the logs"


def test_both_processes_export_their_metrics_and_no_secret_leaves_them(
    traced_cluster: DevCluster, receiver: OtlpReceiver
) -> None:
    edge = traced_cluster.edge_url(0)
    r = httpx.post(f"{edge}/v1/connect", json={"key": "metered", "template": "demo"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert httpx.get(body["url"] + "info", timeout=30).status_code == 200
    control_wanted = {"http.server.request.duration", "meridian.connect.duration", "meridian.backends"}
    edge_wanted = {"meridian.connect.duration", "meridian.proxy.requests", "meridian.backend.spawn.duration"}
    receiver.wait_for(lambda rx: True if control_wanted <= rx.metric_names("meridian-control") else None)
    receiver.wait_for(lambda rx: True if edge_wanted <= rx.metric_names("meridian-edge") else None)
    exported = b"".join(receiver.raw)
    for secret in (body["token"], ADMIN):
        assert secret.encode() not in exported
