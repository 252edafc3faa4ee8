"""`GET /v1/status/{connection-token}` on an edge: the browser's view of its backend's status,
authorised by the connection token alone (real dev cluster)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from meridian.client import Connection, Meridian
from meridian.dev import DevCluster
from meridian.sse import SseParser
from tests.e2e.conftest import ADMIN


def stream(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    parser = SseParser()
    with httpx.stream("GET", url, timeout=httpx.Timeout(30)) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["access-control-allow-origin"] == "*"
        for line in resp.iter_lines():
            event = parser.feed(line)
            if event is not None:
                yield event.event, json.loads(event.data)


def status_url(cluster: DevCluster, conn: Connection) -> str:
    return f"{cluster.edge_url(0)}/v1/status/{conn.token}"


def test_the_stream_reports_ready_then_terminated_and_ends(cluster: DevCluster) -> None:
    with Meridian(cluster.edge_url(0), ADMIN) as api:
        conn = api.connect("status-stream-1", "demo")
        seen: list[str] = []
        for name, body in stream(status_url(cluster, conn)):
            assert name == "status" and body["backend_id"] == conn.backend_id
            seen.append(body["status"])
            if body["status"] == "ready":
                with Meridian(cluster.control_url, ADMIN) as control:
                    control.terminate(conn, hard=True)
    assert seen[-1] == "terminated" and "ready" in seen
    assert seen.index("ready") < seen.index("terminated")


def test_a_revoked_token_ends_the_stream_with_revoked(cluster: DevCluster) -> None:
    with Meridian(cluster.edge_url(0), ADMIN) as api:
        conn = api.connect("status-stream-2", "demo")
        api.wait_ready(conn, timeout=30)
        events = stream(status_url(cluster, conn))
        assert next(events) == ("status", {"backend_id": conn.backend_id, "status": "ready", "reason": None})
        with Meridian(cluster.control_url, ADMIN) as control:
            control.revoke(conn)
        name, body = next(events)
        assert name == "revoked" and body["backend_id"] == conn.backend_id
        assert list(events) == []


def test_a_bad_token_is_refused_without_a_stream(cluster: DevCluster) -> None:
    for token in ("not-a-token", "a" * 300, "%00"):
        r = httpx.get(f"{cluster.edge_url(0)}/v1/status/{token}", timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
