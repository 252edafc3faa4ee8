"""Each bad input gets its 4xx and error code, writes nothing, and leaves the version where it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningControl
from tests.helpers import cluster, version

GOOD = {"key": "doc", "template": "demo"}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({**GOOD, "surprise": 1}, 400, "bad_request", "surprise"),
        ({**GOOD, "key": 42}, 400, "bad_request", "key"),
        ({**GOOD, "key": "k" * 257}, 400, "bad_request", "key"),
        ({**GOOD, "key": "é" * 129}, 400, "bad_request", "key"),  # 258 bytes
        ({**GOOD, "key": "line\nbreak"}, 400, "bad_request", "key"),
        ({**GOOD, "key": "nul\x00"}, 400, "bad_request", "key"),
        ({**GOOD, "key": ""}, 400, "bad_request", "key"),
        ({**GOOD, "template": "no-such"}, 422, "template_unknown", "template"),
        ({**GOOD, "template": "Bad Name"}, 400, "bad_request", "template"),
        ({**GOOD, "location": {"lat": 91, "lon": 0}}, 400, "bad_request", "location.lat"),
        ({**GOOD, "client_ip": "300.1.1.1"}, 400, "bad_request", "client_ip"),
        ({"template": "demo", "region": "nowhere"}, 404, "region_unknown", None),
    ],
)
async def test_bad_connect_bodies(
    control: RunningControl,
    admin: httpx.AsyncClient,
    edge_token: str,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    v = await version(admin)
    r = await admin.post("/v1/connect", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    if field:
        assert field in err["fields"], err
    assert await version(admin) == v
    async with control.state.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM backends") == 0
        assert await conn.fetchval("SELECT count(*) FROM keys") == 0


async def test_key_of_exactly_256_bytes_is_accepted(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    r = await admin.post("/v1/connect", json={**GOOD, "key": "é" * 128})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/regions/eu-west", {"lat": 100, "lon": 0, "edge_url": "http://x"}, "lat"),
        ("/v1/regions/eu-west", {"lat": 1, "lon": 0, "edge_url": "ftp://x"}, "edge_url"),
        ("/v1/regions/Not_Valid", {"lat": 1, "lon": 0, "edge_url": "http://x"}, "name"),
        ("/v1/templates/t", {"executor": "process"}, "body"),
        ("/v1/templates/t", {"executor": "docker", "argv": ["x"]}, "executor"),
        ("/v1/templates/t", {"executor": "process", "argv": ["x"], "env": {"BAD-NAME": "1"}}, "env.BAD-NAME.[key]"),
        ("/v1/templates/t", {"executor": "process", "argv": ["x"], "idle_timeout_s": 0}, "idle_timeout_s"),
    ],
)
async def test_bad_region_and_template_bodies(
    admin: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    v = await version(admin)
    r = await admin.put(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"
    assert any(field in k for k in r.json()["error"]["fields"]), r.json()
    assert await version(admin) == v


async def test_body_over_one_mebibyte_is_413_even_without_content_length(admin: httpx.AsyncClient) -> None:
    v = await version(admin)
    big = b'{"executor": "process", "argv": ["' + b"x" * (1 << 20) + b'"]}'
    r = await admin.put("/v1/templates/big", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # streamed: no Content-Length header
        for _ in range(20):
            yield b"x" * 65536 * 2

    r = await admin.put("/v1/templates/big", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert await version(admin) == v


async def test_malformed_json_and_unknown_paths_get_error_bodies(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/v1/connect", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = await admin.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await admin.get("/v1/backends/bk-doesnotexist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await admin.get("/v1/backends/not-an-id")
    assert r.status_code == 400


# ---- hostile text and numbers: each refused at the boundary with 400 and its field ------------

NUL, NEL, LINE_SEP, PARA_SEP = "\x00", "\x85", "\u2028", "\u2029"
PROCESS = {"executor": "process", "argv": ["x"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "user": "alice" + NUL}, "user"),
        ({**GOOD, "user": "alice\r\nx-meridian-user: admin"}, "user"),
        ({**GOOD, "user": "a" + LINE_SEP}, "user"),
        ({**GOOD, "key": "doc" + NEL}, "key"),
        ({**GOOD, "key": "doc" + LINE_SEP}, "key"),
        ({**GOOD, "key": "doc" + PARA_SEP}, "key"),
        ({**GOOD, "client_ip": "1.2.3.4" + NUL}, "client_ip"),
    ],
)
async def test_hostile_text_in_connect_is_400_with_its_field(
    admin: httpx.AsyncClient, edge_token: str, body: dict[str, Any], field: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    v = await version(admin)
    r = await admin.post("/v1/connect", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["fields"], r.json()
    assert await version(admin) == v


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**PROCESS, "env": {"A": "x" + NUL}}, "env.A"),
        ({**PROCESS, "argv": ["x", "y" + NUL]}, "argv.1"),
        ({**PROCESS, "ready_path": "/" + NUL}, "ready_path"),
        ({"executor": "nomad", "image": "img" + NUL}, "image"),
    ],
)
async def test_nul_in_a_template_is_400_with_its_field(
    admin: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    v = await version(admin)
    r = await admin.put("/v1/templates/t", json=body)
    assert r.status_code == 400, r.text
    assert any(k.startswith(field) for k in r.json()["error"]["fields"]), r.json()
    assert await version(admin) == v


async def test_a_lone_surrogate_in_a_key_is_400(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    raw = b'{"key": "doc\\ud800", "template": "demo"}'  # valid JSON, not encodable as UTF-8
    r = await admin.post("/v1/connect", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "key" in r.json()["error"]["fields"], r.text


async def test_a_newline_in_a_template_env_value_is_kept(admin: httpx.AsyncClient) -> None:
    """Documented exception: argv and env values may hold newlines and tabs (a PEM block)."""
    pem = "-----BEGIN X-----\n\tabc\n-----END X-----\n"
    r = await admin.put("/v1/templates/t", json={**PROCESS, "env": {"PEM": pem}})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["env"]["PEM"] == pem


@pytest.mark.parametrize(
    "edge_url",
    [
        "http://user:pw@eu.example",
        "http://evil.example@eu.example",
        "http://eu.example/\x01",
        "http://eu.example/" + NUL,
        "http://eu.example/" + LINE_SEP,
        "javascript://eu.example/",
        "file:///etc/passwd",
        "http://eu.ex ample",
        "http://eu.example\\@evil",
        "http://",
        "http://eu.example:0",
        "http://eu.example:99999",
        "http://eu.example/?q=1",
    ],
)
async def test_bad_region_edge_urls_are_400(admin: httpx.AsyncClient, edge_url: str) -> None:
    v = await version(admin)
    r = await admin.put("/v1/regions/eu-west", json={"lat": 1, "lon": 2, "edge_url": edge_url})
    assert r.status_code == 400, r.text
    assert "edge_url" in r.json()["error"]["fields"], r.json()
    assert await version(admin) == v


@pytest.mark.parametrize("edge_url", ["http://eu.example", "https://eu.example:8443/base/", "http://[::1]:8701"])
async def test_good_region_edge_urls_are_accepted(admin: httpx.AsyncClient, edge_url: str) -> None:
    r = await admin.put("/v1/regions/eu-west", json={"lat": 1, "lon": 2, "edge_url": edge_url})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"address": "http://nd.test:9000/" + NUL}, "address"),
        ({"applied_version": 2**63}, "applied_version"),
        ({"backends": [{"id": "bk-x", "status": "ready", "address": "h:1" + NUL}]}, "backends.0.address"),
        ({"backends": [{"id": "bk-x" + NUL, "status": "ready"}]}, "backends.0.id"),
        ({"backends": [{"id": "bk-x", "status": "terminated", "exit_code": 2**40}]}, "backends.0.exit_code"),
    ],
)
async def test_hostile_heartbeats_are_400_with_their_field(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, change: dict[str, Any], field: str
) -> None:
    body = {"node_id": "nd-a", "region": "eu-west", "address": "http://nd.test:9000", "capacity": 1}
    body |= {"applied_version": 0, **change}
    async with control.client(edge_token) as edge:
        r = await edge.post("/v1/nodes/heartbeat", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["fields"], r.json()


async def test_integers_beyond_63_bits_are_400_before_any_query(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    async with control.client(edge_token) as edge:
        for since in (2**63, 2**70, -1):
            r = await edge.get("/v1/sync/changes", params={"since": since})
            assert r.status_code == 400, r.text
            assert "query.since" in r.json()["error"]["fields"]
        r = await edge.get("/v1/sync/changes", params={"since": 2**63 - 1})
        assert r.status_code == 410  # ahead of the current version: a snapshot is required, not a 500
    r = await admin.get("/v1/backends/bk-x/events", headers={"Last-Event-ID": str(2**70)})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]["fields"], r.text


async def test_nul_in_a_revoke_user_or_token_name_is_400(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/v1/backends/bk-x/revoke", json={"user": "a" + NUL})
    assert r.status_code == 400 and "user" in r.json()["error"]["fields"], r.text
    r = await admin.post("/v1/tokens", json={"name": "n" + NUL, "scopes": ["client"]})
    assert r.status_code == 400 and "name" in r.json()["error"]["fields"], r.text


POOLED = {**PROCESS, "warm_pool": 2, "claim_path": "/_meridian/claim"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**POOLED, "warm_pool": -1}, "warm_pool"),
        ({**POOLED, "warm_pool": 1001}, "warm_pool"),
        ({**POOLED, "warm_pool": "2"}, "warm_pool"),
        ({**POOLED, "claim_path": "claim"}, "claim_path"),
        ({**POOLED, "claim_path": "/claim\r\nX-Evil: 1"}, "claim_path"),
        ({**POOLED, "claim_path": "/claim\n"}, "claim_path"),
        ({**POOLED, "claim_path": "/a/../b"}, "claim_path"),
        ({**POOLED, "claim_path": "/a/.."}, "claim_path"),
        ({**POOLED, "claim_path": "//evil.example/claim"}, "claim_path"),
        ({**POOLED, "claim_path": "/claim?x=1"}, "claim_path"),
        ({**POOLED, "claim_path": "/claim#frag"}, "claim_path"),
        ({**POOLED, "claim_path": "/cl aim"}, "claim_path"),
        ({**POOLED, "claim_path": "/" + "a" * 1024}, "claim_path"),
        ({**PROCESS, "warm_pool": 2}, "body"),  # a pool needs a claim path
        ({"executor": "nomad", "image": "img", "warm_pool": 1, "claim_path": "/c"}, "body"),  # process only
    ],
)
async def test_bad_warm_pool_and_claim_path_are_400_with_their_field(
    admin: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    v = await version(admin)
    r = await admin.put("/v1/templates/t", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"
    assert any(k.startswith(field) for k in r.json()["error"]["fields"]), r.json()
    assert "\r" not in r.text and "X-Evil: 1" not in r.text.replace("\\r\\n", "")
    assert await version(admin) == v


async def test_a_warm_pool_template_is_accepted_and_shown_to_admins(admin: httpx.AsyncClient) -> None:
    r = await admin.put("/v1/templates/t", json={**POOLED, "claim_path": "/_meridian/claim-v1.json"})
    assert r.status_code == 200, r.text
    assert (r.json()["spec"]["warm_pool"], r.json()["spec"]["claim_path"]) == (2, "/_meridian/claim-v1.json")
