"""`GET /metrics` on the control plane and on an edge (both in this process, real sockets, real
PostgreSQL, a real backend process): Prometheus text that `prometheus_client`'s own parser reads,
numbers that move with real requests, and the scopes that may read it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge import keys
from edge.app import EdgeServer
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.integration.edge_support import ECHO, EDGE_DOMAIN, connect, edge_url, running_edges

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


async def scrape(base_url: str, token: str) -> tuple[str, Samples]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text, parse(r.text)


@pytest.fixture
async def edge(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[EdgeServer]:
    async with running_edges(control, edge_token, tmp_path / "edges", ["eu-west"], {"echo": ECHO}) as edges:
        yield edges[0]


def _status(backend: object) -> str | None:
    if backend is None:
        return None
    return str(backend["status"] if isinstance(backend, dict) else getattr(backend, "status"))  # noqa: B009


async def test_connect_and_proxy_metrics_move_with_real_requests(
    control: RunningControl, edge: EdgeServer, edge_token: str
) -> None:
    url = edge_url(edge)
    _, edge_before = await scrape(url, edge_token)
    _, control_before = await scrape(control.url, edge_token)

    first = await connect(edge, "metered")  # a new key: forwarded, spawned by the control plane
    async with aiohttp.ClientSession() as s:
        for _ in range(5):  # plain HTTP/1.1: the fast path
            async with s.get(first["url"] + "ready") as r:
                assert r.status == 200
        subdomain = {"Host": f"{first['backend_id']}.{EDGE_DOMAIN}", "Authorization": f"Bearer {first['token']}"}
        async with s.get(f"{url}/ready", headers=subdomain) as r:  # subdomain routing
            assert r.status == 200
    replica = edge.app[keys.REPLICA]
    await asyncio.wait_for(
        edge.app[keys.SYNC_LOOP].wait_until(lambda _: _status(replica.backend(first["backend_id"])) == "ready"), 30
    )
    for _ in range(2):
        again = await connect(edge, "metered")  # now answered from the edge's replica
        assert again["backend_id"] == first["backend_id"]

    edge_text, edge_after = await scrape(url, edge_token)
    control_text, control_after = await scrape(control.url, edge_token)

    def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    connects = "meridian_connect_duration_seconds_count"
    assert moved(edge_before, edge_after, connects, outcome="forwarded") == 1
    assert moved(edge_before, edge_after, connects, outcome="replica") == 2
    assert moved(control_before, control_after, connects, outcome="spawned") == 1
    assert moved(edge_before, edge_after, "meridian_proxy_requests_total") == 6
    assert value(edge_after, "meridian_proxy_open_connections") == 0
    assert value(edge_after, "meridian_backends", state="ready") == 1
    assert moved(edge_before, edge_after, "meridian_backend_spawn_duration_seconds_count", outcome="ready") == 1
    steps = "meridian_backend_start_step_duration_seconds_count"
    assert moved(edge_before, edge_after, steps, step="assign") == 1
    assert moved(edge_before, edge_after, steps, step="ready", pooled="false") == 1
    http = "http_server_request_duration_seconds_count"
    post_connect = {"http_request_method": "POST", "http_route": "/v1/connect", "http_response_status_code": "200"}
    assert moved(edge_before, edge_after, http, **post_connect) == 3
    assert moved(control_before, control_after, http, **post_connect) == 1
    # The edge scrape came first: the control plane may have committed more since, never less.
    assert 0 < value(edge_after, "meridian_sync_applied_version") <= value(control_after, "meridian_sync_version")
    assert value(edge_after, "meridian_sync_reachable") == 1
    assert any(n == "meridian_journal_pending" for n, _ in edge_after)  # wired to the offline journal
    assert value(control_after, "meridian_backends", region="eu-west") == 1
    assert value(control_after, "meridian_edge_nodes", region="eu-west", healthy="true") == 1
    lag = [k for k in control_after if k[0] == "meridian_sync_lag_versions"]
    assert len(lag) == 1 and dict(lag[0][1])["region"] == "eu-west"
    for text in (edge_text, control_text):  # labels hold route templates, never tokens or secrets
        assert first["token"] not in text and ADMIN_TOKEN not in text and edge_token not in text


@pytest.mark.parametrize("where", ["control", "edge"])
async def test_metrics_need_an_admin_edge_or_observer_token(
    control: RunningControl, client_token: str, observer_token: str, edge_token: str, edge: EdgeServer, where: str
) -> None:
    # The tokens come before `edge`: the edge has synced them by the time it answers.
    base = control.url if where == "control" else edge_url(edge)
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        missing = await c.get("/metrics")
        unknown = await c.get("/metrics", headers={"Authorization": "Bearer not-a-token-at-all"})
        client = await c.get("/metrics", headers={"Authorization": f"Bearer {client_token}"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "unauthorized")
        assert (client.status_code, client.json()["error"]["code"]) == (403, "forbidden")
        assert "# TYPE" not in missing.text + unknown.text + client.text
        for token in (ADMIN_TOKEN, edge_token, observer_token):
            assert (await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})).status_code == 200
