"""setdefault semantics under load, and fencing tokens, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx

from tests.conftest import ADMIN_TOKEN, RunningControl, start_control, stop_control
from tests.helpers import cluster, heartbeat


async def test_1000_concurrent_connects_for_one_new_key_create_exactly_one_backend(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"], capacity=10_000)
    # Two control-plane processes' worth of state on one database: the in-process single-flight
    # cannot help across them, so only the database's key lock keeps the answer to one backend.
    second = await start_control(control.db_url)
    urls = [control.url, second.url]
    # aiohttp as the load client: httpx's pool degrades quadratically with 1,000 queued requests.
    connector = aiohttp.TCPConnector(limit=200)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def connect(i: int) -> tuple[int, dict[str, Any]]:
                url = f"{urls[i % 2]}/v1/connect"
                async with session.post(url, json={"key": "hot-doc", "template": "demo"}) as r:
                    return r.status, await r.json()

            answers = await asyncio.gather(*(connect(i) for i in range(1000)))
    finally:
        await stop_control(second)
    assert all(status == 200 for status, _ in answers), {str(b) for s, b in answers if s != 200}
    ids = {body["backend_id"] for _, body in answers}
    assert len(ids) == 1
    assert sum(body["spawned"] for _, body in answers) == 1
    assert {body["fencing_token"] for _, body in answers} == {1}
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


async def test_concurrent_respawns_across_control_planes_yield_one_backend_and_a_greater_token(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    """The key row already exists here, so only its row lock (not the unique index) serialises."""
    await cluster(admin, edge_token, ["eu-west"], capacity=10_000)
    planes = [control] + [await start_control(control.db_url) for _ in range(3)]
    try:
        for round_ in range(5):
            first = (await admin.post("/v1/connect", json={"key": "k", "template": "demo"})).json()
            await admin.post(f"/v1/backends/{first['backend_id']}/terminate", json={"hard": True})
            clients = [p.client() for p in planes]
            answers = await asyncio.gather(
                *(c.post("/v1/connect", json={"key": "k", "template": "demo"}) for c in clients for _ in range(5))
            )
            for c in clients:
                await c.aclose()
            bodies = [a.json() for a in answers]
            assert len({b["backend_id"] for b in bodies}) == 1, f"round {round_}: two backends for one key"
            assert {b["fencing_token"] for b in bodies} == {first["fencing_token"] + 1}
    finally:
        for p in planes[1:]:
            await stop_control(p)
