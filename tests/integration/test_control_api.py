"""The control plane's public API against a real PostgreSQL and a real HTTP server on loopback."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import RunningControl
from tests.helpers import cluster, heartbeat, version


async def test_healthz_shows_the_version_and_writes_move_it(admin: httpx.AsyncClient, edge_token: str) -> None:
    before = await version(admin)
    await cluster(admin, edge_token, ["eu-west"])
    after = await version(admin)
    # region, node registration, template spec and template name: each write committed its own version
    assert after >= before + 3


async def test_region_put_then_list_shows_nodes_with_health_and_applied_version(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    r = await heartbeat(str(admin.base_url), edge_token, "nd-eu-2", "eu-west", capacity=7)
    assert r.status_code == 200
    regions = {x["name"]: x for x in (await admin.get("/v1/regions")).json()}
    assert set(regions) == {"eu-west", "us-east"}
    eu = regions["eu-west"]
    assert (eu["lat"], eu["lon"]) == (53.35, -6.26)
    nodes = {n["id"]: n for n in eu["nodes"]}
    assert nodes["nd-eu-2"]["capacity"] == 7 and nodes["nd-eu-2"]["healthy"] is True
    assert nodes["nd-eu-2"]["applied_version"] == 0


async def test_heartbeat_from_a_known_region_name_creates_that_region(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    r = await heartbeat(str(admin.base_url), edge_token, "nd-tokyo", "ap-northeast")
    assert r.status_code == 200, r.text
    regions = {x["name"]: x for x in (await admin.get("/v1/regions")).json()}
    assert (regions["ap-northeast"]["lat"], regions["ap-northeast"]["lon"]) == (35.68, 139.69)
    r = await heartbeat(str(admin.base_url), edge_token, "nd-x", "moon-base")
    assert r.status_code == 404 and r.json()["error"]["code"] == "region_unknown"


async def test_template_is_content_addressed_and_idempotent(admin: httpx.AsyncClient) -> None:
    spec = {"executor": "process", "argv": ["python3", "-m", "http.server"], "env": {"A": "1"}}
    first = (await admin.put("/v1/templates/web", json=spec)).json()
    v = await version(admin)
    again = (await admin.put("/v1/templates/web", json=dict(reversed(list(spec.items()))))).json()
    assert first["id"] == again["id"] and first["id"].startswith("tp-") and len(first["id"]) == 3 + 64
    assert await version(admin) == v, "re-putting the same spec must not move the version"
    changed = (await admin.put("/v1/templates/web", json={**spec, "env": {"A": "2"}})).json()
    assert changed["id"] != first["id"]
    names = [t["name"] for t in (await admin.get("/v1/templates")).json()]
    assert names == ["web"]


async def test_connect_spawns_then_returns_the_same_backend_for_the_key(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    first = await admin.post("/v1/connect", json={"key": "doc-1", "template": "demo"})
    assert first.status_code == 200, first.text
    a = first.json()
    assert a["spawned"] is True and a["status"] == "scheduled" and a["region"] == "eu-west"
    assert a["url"] == f"{a['edge_url']}/{a['token']}/" and a["edge_url"] == "http://eu-west.edge.test"
    assert a["fencing_token"] == 1 and a["placement"]["region"] == "eu-west"
    second = (await admin.post("/v1/connect", json={"key": "doc-1", "template": "demo"})).json()
    assert second["backend_id"] == a["backend_id"] and second["spawned"] is False
    assert second["placement"]["reason"] == "existing"
    keyless = [(await admin.post("/v1/connect", json={"template": "demo"})).json() for _ in range(2)]
    assert keyless[0]["backend_id"] != keyless[1]["backend_id"], "without a key every connect spawns"
    got = (await admin.get(f"/v1/backends/{a['backend_id']}")).json()
    assert got["key"] == "doc-1" and got["node"] == "nd-eu-west" and got["template"] == "demo"


async def test_connect_pinned_region_and_region_without_healthy_node(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    r = await admin.post("/v1/connect", json={"template": "demo", "region": "us-east"})
    assert r.json()["region"] == "us-east" and r.json()["placement"]["reason"] == "pinned"
    async with control.state.pool.acquire() as conn:
        await conn.execute("UPDATE edge_nodes SET last_heartbeat_at = now() - interval '1 hour'")
    v = await version(admin)
    r = await admin.post("/v1/connect", json={"template": "demo", "region": "us-east"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_capacity"
    assert await version(admin) == v


async def test_key_held_by_another_template_is_a_conflict(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await admin.put("/v1/templates/other", json={"executor": "process", "argv": ["true"]})
    assert (await admin.post("/v1/connect", json={"key": "k", "template": "demo"})).status_code == 200
    r = await admin.post("/v1/connect", json={"key": "k", "template": "other"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_held"


async def test_status_moves_only_forward_and_terminate_frees_the_key(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    a = (await admin.post("/v1/connect", json={"key": "doc", "template": "demo"})).json()
    bid = a["backend_id"]
    base = str(admin.base_url)
    r = await heartbeat(
        base,
        edge_token,
        "nd-eu-west",
        "eu-west",
        backends=[{"id": bid, "status": "ready", "address": "127.0.0.1:5000"}],
    )
    assert r.json()["backends"] == [{"id": bid, "accepted": True, "status": "ready"}]
    r = await heartbeat(base, edge_token, "nd-eu-west", "eu-west", backends=[{"id": bid, "status": "starting"}])
    assert r.json()["backends"][0]["accepted"] is False
    got = (await admin.get(f"/v1/backends/{bid}")).json()
    assert got["status"] == "ready" and got["address"] == "127.0.0.1:5000"
    # a node cannot report on another node's backend
    r = await heartbeat(base, edge_token, "nd-other", "eu-west", backends=[{"id": bid, "status": "terminated"}])
    assert r.json()["backends"][0]["accepted"] is False
    t = (await admin.post(f"/v1/backends/{bid}/terminate", json={})).json()
    assert t["status"] == "draining" and t["termination_reason"] == "requested"
    again = (await admin.post("/v1/connect", json={"key": "doc", "template": "demo"})).json()
    assert again["backend_id"] != bid and again["fencing_token"] == a["fencing_token"] + 1


async def test_backend_events_stream_history_then_live_changes(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    bid = (await admin.post("/v1/connect", json={"key": "ev", "template": "demo"})).json()["backend_id"]
    seen: list[tuple[str, str]] = []

    async def read() -> None:
        async with admin.stream("GET", f"/v1/backends/{bid}/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            event_id = ""
            async for line in resp.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                if line.startswith("data: "):
                    import json

                    seen.append((event_id, json.loads(line[6:])["status"]))

    reader = asyncio.create_task(read())
    base = str(admin.base_url)
    for status in ("starting", "ready", "terminated"):
        await heartbeat(base, edge_token, "nd-eu-west", "eu-west", backends=[{"id": bid, "status": status}])
    await asyncio.wait_for(reader, 10)
    assert [s for _, s in seen] == ["scheduled", "starting", "ready", "terminated"]
    # resuming after the second event replays only what followed it
    resumed: list[str] = []
    async with admin.stream("GET", f"/v1/backends/{bid}/events", headers={"Last-Event-ID": seen[1][0]}) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                resumed.append(line)
    assert len(resumed) == 2


async def test_client_scope_sees_only_its_own_backends(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, client_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    mine = (await admin.post("/v1/connect", json={"template": "demo"})).json()["backend_id"]
    async with control.client(client_token) as client:
        theirs = (await client.post("/v1/connect", json={"template": "demo"})).json()["backend_id"]
        listed = [b["id"] for b in (await client.get("/v1/backends")).json()]
        assert listed == [theirs]
        assert (await client.get(f"/v1/backends/{mine}")).status_code == 404
        got = (await client.get(f"/v1/backends/{theirs}")).json()
        assert "address" not in got, "address is for admin scope only"
    listed_admin = {b["id"] for b in (await admin.get("/v1/backends")).json()}
    assert {mine, theirs} <= listed_admin


@pytest.mark.parametrize(
    ("method", "path", "scope", "status"),
    [
        ("put", "/v1/regions/eu-west", "client", 403),
        ("put", "/v1/templates/x", "edge", 403),
        ("post", "/v1/nodes/heartbeat", "client", 403),
        ("post", "/v1/tokens", "edge", 403),  # client tokens may mint (confined) client tokens
        ("post", "/v1/connect", None, 401),
        ("get", "/v1/regions", "bogus", 401),
    ],
)
async def test_auth_and_scopes(
    control: RunningControl, admin: httpx.AsyncClient, method: str, path: str, scope: str | None, status: int
) -> None:
    token = None
    if scope == "bogus":
        token = "not-a-real-token-at-all"
    elif scope is not None:
        token = (await admin.post("/v1/tokens", json={"name": scope, "scopes": [scope]})).json()["token"]
    v = await version(admin)
    async with control.client(token) as c:
        r = await c.request(method.upper(), path, json={"lat": 1, "lon": 1, "edge_url": "http://x"})
    assert r.status_code == status
    assert r.json()["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
    assert await version(admin) == v


async def test_malformed_authorization_headers_are_401(control: RunningControl) -> None:
    async with control.client(None) as c:
        for header in ("Basic abc", "Bearer", "Bearer " + "x" * 5000):
            r = await c.get("/v1/regions", headers={"Authorization": header})
            assert r.status_code == 401, header


async def test_backends_of_a_node_silent_past_key_failover_are_lost_and_free_their_keys(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    from control.services.failover import fail_over_silent_nodes
    from sync.timing import KEY_FAILOVER_AFTER_S

    await cluster(admin, edge_token, ["eu-west", "us-east"])
    a = (await admin.post("/v1/connect", json={"key": "fo", "template": "demo", "region": "eu-west"})).json()
    assert await fail_over_silent_nodes(control.state.pool) == 0, "a healthy node keeps its backends"
    async with control.state.pool.acquire() as conn:
        await conn.execute(
            "UPDATE edge_nodes SET last_heartbeat_at = now() - make_interval(secs => $1) WHERE region = 'eu-west'",
            KEY_FAILOVER_AFTER_S + 1,
        )
    assert await fail_over_silent_nodes(control.state.pool) == 1
    lost = (await admin.get(f"/v1/backends/{a['backend_id']}")).json()
    assert lost["status"] == "terminated" and lost["termination_reason"] == "lost"
    control.state.connect.fleet.invalidate()
    b = (await admin.post("/v1/connect", json={"key": "fo", "template": "demo"})).json()
    assert b["region"] == "us-east" and b["fencing_token"] == a["fencing_token"] + 1
