"""The read-only `observer` scope and `POST /v1/placement/preview` against a real control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sync.catalog import KNOWN_REGIONS
from tests.conftest import RunningControl, mint_token
from tests.helpers import cluster

REGIONS = ["eu-west", "us-east", "ap-northeast"]
TOKYO = {"lat": 35.6, "lon": 139.8}


@pytest.fixture
async def fleet(control: RunningControl, admin: httpx.AsyncClient, edge_token: str) -> RunningControl:
    await cluster(admin, edge_token, REGIONS)
    return control


@pytest.fixture
async def observer(fleet: RunningControl, admin: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    async with fleet.client(await mint_token(admin, "observer")) as client:
        yield client


async def _spawn(admin_or_client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    r = await admin_or_client.post("/v1/connect", json={"key": key, "template": "demo", "region": "eu-west"})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_observer_reads_regions_templates_and_every_backend(
    fleet: RunningControl, admin: httpx.AsyncClient, observer: httpx.AsyncClient, client_token: str
) -> None:
    async with fleet.client(client_token) as client:
        theirs = await _spawn(client, "doc-of-a-client")
    mine = await _spawn(admin, "doc-of-admin")

    regions = (await observer.get("/v1/regions")).json()
    assert sorted(r["name"] for r in regions) == sorted(REGIONS)
    assert {n["id"] for r in regions for n in r["nodes"]} == {f"nd-{name}" for name in REGIONS}
    assert [t["name"] for t in (await observer.get("/v1/templates")).json()] == ["demo"]
    assert (await observer.get("/v1/templates/demo")).status_code == 200

    listed = {b["id"] for b in (await observer.get("/v1/backends")).json()}
    assert {theirs["backend_id"], mine["backend_id"]} <= listed
    one = await observer.get(f"/v1/backends/{theirs['backend_id']}")
    assert one.status_code == 200 and "address" not in one.json()
    async with observer.stream("GET", f"/v1/backends/{mine['backend_id']}/events") as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")


async def test_observer_changes_nothing(
    fleet: RunningControl, admin: httpx.AsyncClient, observer: httpx.AsyncClient
) -> None:
    backend = await _spawn(admin, "doc-watched")
    refused = [
        await observer.post(f"/v1/backends/{backend['backend_id']}/terminate", json={}),
        await observer.post(f"/v1/backends/{backend['backend_id']}/revoke", json={}),
        await observer.post("/v1/connect", json={"key": "doc-new", "template": "demo"}),
        await observer.put("/v1/regions/eu-west", json={"lat": 0, "lon": 0, "edge_url": "http://x.test"}),
        await observer.put("/v1/templates/demo", json={"executor": "process", "argv": ["true"]}),
        await observer.post("/v1/tokens", json={"name": "mine", "scopes": ["admin"]}),
        await observer.post("/v1/signing-keys/rotate"),
        await observer.get("/v1/sync/changes", params={"since": 0}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert {r.json()["error"]["code"] for r in refused} == {"forbidden"}
    still = (await admin.get(f"/v1/backends/{backend['backend_id']}")).json()
    assert still["status"] != "draining" and still["status"] != "terminated"


async def test_client_with_observer_scope_still_controls_only_its_own_backends(
    fleet: RunningControl, admin: httpx.AsyncClient
) -> None:
    other = await _spawn(admin, "doc-someone-else")
    async with fleet.client(await mint_token(admin, "client", "observer")) as both:
        assert (await both.get(f"/v1/backends/{other['backend_id']}")).status_code == 200
        r = await both.post(f"/v1/backends/{other['backend_id']}/terminate", json={})
        assert r.status_code == 404
        own = await _spawn(both, "doc-own")
        assert (await both.post(f"/v1/backends/{own['backend_id']}/terminate", json={})).status_code == 200


async def test_preview_near_tokyo_ranks_every_region_and_spawns_nothing(
    fleet: RunningControl, admin: httpx.AsyncClient, observer: httpx.AsyncClient
) -> None:
    before = (await admin.get("/healthz")).json()["version"]
    r = await observer.post("/v1/placement/preview", json={"location": TOKYO, "template": "demo"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["region"], answer["reason"]) == ("ap-northeast", "location")
    assert 0 < answer["distance_km"] < 30
    assert answer["origin"] == TOKYO
    assert [row["name"] for row in answer["ranking"]] == [
        "ap-northeast",
        "eu-west",
        "us-east",
    ]  # Dublin is nearer than Washington
    assert all(row["eligible"] and row["why_not"] is None for row in answer["ranking"])
    assert (await admin.get("/healthz")).json()["version"] == before
    assert (await admin.get("/v1/backends")).json() == []


async def test_preview_matches_what_connect_then_does(
    fleet: RunningControl, admin: httpx.AsyncClient, observer: httpx.AsyncClient
) -> None:
    for name in REGIONS:
        spot = {"lat": KNOWN_REGIONS[name].lat + 1.0, "lon": KNOWN_REGIONS[name].lon - 1.0}
        preview = (await observer.post("/v1/placement/preview", json={"location": spot})).json()
        done = await admin.post("/v1/connect?explain=true", json={"template": "demo", "location": spot})
        placement = done.json()["placement"]
        assert (preview["region"], preview["reason"], preview["distance_km"]) == (
            placement["region"],
            placement["reason"],
            placement["distance_km"],
        )
        assert preview["ranking"] == placement["ranking"]


async def test_preview_says_why_the_nearest_region_was_not_chosen(
    fleet: RunningControl, admin: httpx.AsyncClient, observer: httpx.AsyncClient
) -> None:
    async with fleet.state.pool.acquire() as conn:
        await conn.execute(
            "UPDATE edge_nodes SET last_heartbeat_at = now() - interval '1 hour' WHERE region = 'ap-northeast'"
        )
    fleet.state.connect.fleet.invalidate()
    answer = (await observer.post("/v1/placement/preview", json={"location": TOKYO})).json()
    assert answer["reason"] == "location+fallback"
    assert answer["region"] == "eu-west"
    assert answer["ranking"][0] == {
        **answer["ranking"][0],
        "name": "ap-northeast",
        "eligible": False,
        "why_not": "unhealthy",
    }


async def test_preview_without_a_signal_uses_the_default_region(observer: httpx.AsyncClient) -> None:
    answer = (await observer.post("/v1/placement/preview", json={})).json()
    assert (answer["region"], answer["reason"], answer["origin"]) == (
        "eu-west",
        "default",
        {"lat": 53.35, "lon": -6.26},
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"location": {"lat": 91, "lon": 0}}, 400, "bad_request"),
        ({"location": {"lat": 0, "lon": "east"}}, 400, "bad_request"),
        ({"location": {"lat": 0, "lon": 0, "alt": 3}}, 400, "bad_request"),
        ({"client_ip": "not-an-ip"}, 400, "bad_request"),
        ({"client_ip": "1.2.3.4\r\nX-Evil: 1"}, 400, "bad_request"),
        ({"template": "../etc"}, 400, "bad_request"),
        ({"template": "nope"}, 422, "template_unknown"),
        ({"spawn": True}, 400, "bad_request"),
    ],
)
async def test_preview_refuses_bad_input(
    observer: httpx.AsyncClient, body: dict[str, Any], status: int, code: str
) -> None:
    r = await observer.post("/v1/placement/preview", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_preview_needs_admin_or_observer(
    fleet: RunningControl, admin: httpx.AsyncClient, client_token: str
) -> None:
    async with fleet.client(client_token) as client:
        r = await client.post("/v1/placement/preview", json={"location": TOKYO})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    async with fleet.client(None) as nobody:
        assert (await nobody.post("/v1/placement/preview", json={"location": TOKYO})).status_code == 401
    async with fleet.client("wrong-token") as wrong:
        assert (await wrong.post("/v1/placement/preview", json={"location": TOKYO})).status_code == 401
    assert (await admin.post("/v1/placement/preview", json={"location": TOKYO})).status_code == 200


async def test_a_client_cannot_mint_itself_an_observer_token(fleet: RunningControl, client_token: str) -> None:
    async with fleet.client(client_token) as client:
        r = await client.post("/v1/tokens", json={"name": "peek", "scopes": ["observer"]})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        r = await client.post("/v1/tokens", json={"name": "peek", "scopes": ["client", "observer"]})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        assert (await client.get("/v1/fleet/events")).status_code == 403


async def test_an_observer_cannot_be_confined_so_it_never_looks_narrower_than_it_is(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/v1/tokens", json={"name": "o", "scopes": ["observer"], "key_prefix": "tenant-a/"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
