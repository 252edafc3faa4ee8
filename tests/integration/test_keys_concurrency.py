"""setdefault semantics under load, and fencing tokens, against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import RunningControl
from tests.helpers import cluster, heartbeat


async def test_1000_concurrent_connects_for_one_new_key_create_exactly_one_backend(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"], capacity=10_000)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with control.client(limits=limits) as c:
        answers = await asyncio.gather(
            *(c.post("/v1/connect", json={"key": "hot-doc", "template": "demo"}) for _ in range(1000))
        )
    assert all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    ids = {a.json()["backend_id"] for a in answers}
    assert len(ids) == 1
    assert sum(a.json()["spawned"] for a in answers) == 1
    async with control.state.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM backends WHERE key = 'hot-doc'") == 1


async def test_each_new_backend_of_a_key_gets_a_strictly_greater_fencing_token(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    tokens = []
    for _ in range(5):
        a = (await admin.post("/v1/connect", json={"key": "fenced", "template": "demo"})).json()
        tokens.append(a["fencing_token"])
        # the edge reports it failed; the key is free again
        await heartbeat(
            str(admin.base_url),
            edge_token,
            "nd-eu-west",
            "eu-west",
            backends=[{"id": a["backend_id"], "status": "terminated", "termination_reason": "failed"}],
        )
    assert tokens == sorted(set(tokens)) and len(tokens) == 5
    other = (await admin.post("/v1/connect", json={"key": "other", "template": "demo"})).json()
    assert other["fencing_token"] == 1, "fencing tokens count per key"


async def test_concurrent_respawns_after_termination_still_yield_one_backend_and_a_greater_token(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    first = (await admin.post("/v1/connect", json={"key": "k", "template": "demo"})).json()
    await admin.post(f"/v1/backends/{first['backend_id']}/terminate", json={"hard": True})
    answers = await asyncio.gather(
        *(admin.post("/v1/connect", json={"key": "k", "template": "demo"}) for _ in range(100))
    )
    bodies = [a.json() for a in answers]
    assert len({b["backend_id"] for b in bodies}) == 1
    assert {b["fencing_token"] for b in bodies} == {first["fencing_token"] + 1}
