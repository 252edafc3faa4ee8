"""Each bad input gets its 4xx and error code, writes nothing, and leaves the version where it was."""

from __future__ import annotations

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
    body: dict,
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
async def test_bad_region_and_template_bodies(admin: httpx.AsyncClient, path: str, body: dict, field: str) -> None:
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

    async def chunks():  # streamed: no Content-Length header
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
