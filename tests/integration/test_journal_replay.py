"""Reconciliation on the control plane (`POST /v1/nodes/{id}/journal`) against a real PostgreSQL:
adoption with the edge's fencing token, the survivor rule, idempotency, and what it refuses."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import httpx

from sync.offline import node_tag, provisional_token
from tests.helpers import cluster, version


def _spawn(
    node: str, region: str, key: str | None, token: int, template_id: str, backend_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": f"bk-{secrets.token_hex(8)}",
        "key": key,
        "template_name": "demo",
        "template_id": template_id,
        "region": region,
        "node_id": node,
        "fencing_token": token,
        "secret": secrets.token_urlsafe(24),
        "created_at": datetime.now(UTC).isoformat(),
    }


async def _replay(base_url: str, edge_token: str, node: str, entries: list[dict[str, Any]]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {edge_token}"}) as c:
        return await c.post(f"/v1/nodes/{node}/journal", json={"entries": entries})


async def _template_id(admin: httpx.AsyncClient) -> str:
    result: str = next(t["id"] for t in (await admin.get("/v1/templates")).json() if t["name"] == "demo")
    return result


async def _live(admin: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    rows = (await admin.get("/v1/backends", params={"key": key})).json()
    return [b for b in rows if b["status"] in ("scheduled", "starting", "ready")]


async def test_a_free_key_is_adopted_with_its_token_and_replaying_twice_changes_nothing(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    tid = await _template_id(admin)
    token = provisional_token(0, node_tag(1, "nd-eu-west"))
    spawn = _spawn("nd-eu-west", "eu-west", "doc-adopt", token, tid)
    report = {"id": spawn["id"], "status": "ready", "address": "127.0.0.1:4000"}
    entries = [{"seq": 1, "spawn": spawn}, {"seq": 2, "report": report}]
    first = await _replay(str(admin.base_url), edge_token, "nd-eu-west", entries)
    assert first.status_code == 200, first.text
    assert [r["outcome"] for r in first.json()["results"]] == ["adopted", "applied"]
    row = (await admin.get(f"/v1/backends/{spawn['id']}")).json()
    assert (row["fencing_token"], row["status"], row["key"], row["region"]) == (token, "ready", "doc-adopt", "eu-west")
    at = await version(admin)
    again = await _replay(str(admin.base_url), edge_token, "nd-eu-west", entries)
    assert [r["outcome"] for r in again.json()["results"]] == ["adopted", "applied"]
    assert await version(admin) == at, "a replayed page moves nothing"
    # The key's counter took the provisional token: the next online backend gets a greater one.
    await admin.post(f"/v1/backends/{spawn['id']}/terminate", json={"hard": True})
    fresh = (await admin.post("/v1/connect", json={"key": "doc-adopt", "template": "demo"})).json()
    assert fresh["fencing_token"] > token


async def test_split_brain_keeps_the_greater_token_and_supersedes_the_other(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    tid = await _template_id(admin)
    low = _spawn("nd-eu-west", "eu-west", "doc-split", provisional_token(0, 1), tid)
    high = _spawn("nd-us-east", "us-east", "doc-split", provisional_token(0, 2), tid)
    # The greater token arrives first; the lesser one then loses on arrival.
    r = await _replay(str(admin.base_url), edge_token, "nd-us-east", [{"seq": 1, "spawn": high}])
    assert r.json()["results"][0]["outcome"] == "adopted"
    r = await _replay(str(admin.base_url), edge_token, "nd-eu-west", [{"seq": 1, "spawn": low}])
    result = r.json()["results"][0]
    assert (result["outcome"], result["winner_id"]) == ("superseded", high["id"])
    assert [b["id"] for b in await _live(admin, "doc-split")] == [high["id"]]
    lost = (await admin.get(f"/v1/backends/{low['id']}")).json()
    assert (lost["status"], lost["termination_reason"]) == ("terminated", "superseded")


async def test_an_offline_spawn_with_a_greater_token_supersedes_the_online_backend(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    tid = await _template_id(admin)
    online = (await admin.post("/v1/connect", json={"key": "doc-gave", "template": "demo", "region": "us-east"})).json()
    offline = _spawn("nd-eu-west", "eu-west", "doc-gave", provisional_token(online["fencing_token"], 1), tid)
    r = await _replay(str(admin.base_url), edge_token, "nd-eu-west", [{"seq": 7, "spawn": offline}])
    assert r.json()["results"][0]["outcome"] == "adopted"
    assert [b["id"] for b in await _live(admin, "doc-gave")] == [offline["id"]]
    old = (await admin.get(f"/v1/backends/{online['backend_id']}")).json()
    assert old["termination_reason"] == "superseded"


async def test_entries_of_another_node_or_unknown_backends_are_ignored(
    admin: httpx.AsyncClient, edge_token: str, client_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    tid = await _template_id(admin)
    foreign = _spawn("nd-us-east", "us-east", "doc-foreign", provisional_token(0, 2), tid)
    entries = [{"seq": 1, "spawn": foreign}, {"seq": 2, "report": {"id": "bk-nobody", "status": "ready"}}]
    r = await _replay(str(admin.base_url), edge_token, "nd-eu-west", entries)
    assert [x["outcome"] for x in r.json()["results"]] == ["ignored", "ignored"]
    assert await _live(admin, "doc-foreign") == []
    r = await _replay(str(admin.base_url), client_token, "nd-eu-west", entries)
    assert r.status_code == 403
    r = await _replay(str(admin.base_url), edge_token, "nd-nowhere", entries)
    assert r.status_code == 404
    bad = [{"seq": 1, "spawn": foreign | {"fencing_token": -1}}]
    r = await _replay(str(admin.base_url), edge_token, "nd-us-east", bad)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
