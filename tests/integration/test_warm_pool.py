"""Warm pools on a real edge (in this loop) with real demo processes and a real control plane: the
pool fills, a new key claims a member instead of starting a process, the pool refills, a member
that refuses its claim is discarded and the connect still succeeds, members count against the
node's capacity, a drain and a clean shutdown stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge import keys
from edge.app import send_heartbeat
from edge.warm_pool import WarmPool
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.helpers import add_region
from tests.integration.test_edge_event_loop import running_edge_app

Json = dict[str, Any]
DEMO: Json = {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"]}
POOLED: Json = {**DEMO, "warm_pool": 2, "claim_path": "/_meridian/claim"}
TIMEOUT_S = 30


def demo_children() -> set[int]:
    """Live demo backends started by this process (the in-loop edge's executor)."""
    me, found = str(os.getpid()), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[1] == me and stat[0] != "Z" and b"meridian.demo" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def pool_of(app: web.Application) -> WarmPool:
    pool = app[keys.DRONE].pool
    assert pool is not None
    return pool


def ready_members(pool: WarmPool) -> int:
    return sum(pool.available().values())


async def filled(pool: WarmPool, n: int) -> None:
    """Until the pool holds `n` ready members (awaited, not polled)."""
    async with asyncio.timeout(TIMEOUT_S):
        await pool.wait_until(lambda p: ready_members(p) == n)


@contextlib.asynccontextmanager
async def pooled_edge(
    control: RunningControl, edge_token: str, data_dir: Path, templates: dict[str, Json], **settings: object
) -> AsyncIterator[tuple[str, web.Application]]:
    async with running_edge_app(control, edge_token, data_dir, templates, **settings) as (url, app):
        yield url, app


async def connect(edge_url: str, key: str, template: str, user: str | None = None) -> Json:
    body = {"key": key, "template": template, **({"user": user} if user else {})}
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with s.post(f"{edge_url}/v1/connect", json=body, headers=headers) as r:
            answer: Json = await r.json()
            assert r.status == 200, answer
            return answer


async def info(answer: Json) -> Json:
    async with aiohttp.ClientSession() as s, s.get(answer["url"] + "info") as r:
        assert r.status == 200, await r.text()
        seen: Json = await r.json()
        return seen


async def test_a_new_key_claims_a_ready_member_and_the_pool_refills(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with pooled_edge(control, edge_token, tmp_path / "edge", {"pooled": POOLED}) as (url, app):
        pool = pool_of(app)
        await filled(pool, 2)
        members = demo_children()
        assert len(members) == 2

        answer = await connect(url, "doc-pooled", "pooled", user="ann")
        seen = await info(answer)
        assert seen["claimed"] is True and seen["proxied"] is True
        assert (seen["key"], seen["fencing_token"], seen["backend_id"]) == (
            "doc-pooled",
            answer["fencing_token"],
            answer["backend_id"],
        )
        assert seen["user"] == "ann"
        assert seen["pid"] in members, "the backend is a pool member, not a new process"
        local = app[keys.DRONE].local[answer["backend_id"]]
        assert local.pool_member is not None

        await filled(pool, 2)
        after = demo_children()
        assert len(after) == 3 and members <= after

        # The claimed backend is a backend like any other: the same key gets it again.
        again = await connect(url, "doc-pooled", "pooled")
        assert again["backend_id"] == answer["backend_id"]
        assert (await info(again))["pid"] == seen["pid"]
    assert demo_children() == set(), "a clean shutdown stops members and claimed backends"


async def test_a_member_that_refuses_its_claim_is_discarded_and_the_connect_starts_cold(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    refusing: Json = {**POOLED, "warm_pool": 1, "claim_path": "/no-such-claim-route"}  # the demo answers 404
    async with pooled_edge(control, edge_token, tmp_path / "edge", {"refusing": refusing}) as (url, app):
        pool = pool_of(app)
        await filled(pool, 1)
        (member,) = demo_children()
        answer = await connect(url, "doc-cold", "refusing")
        seen = await info(answer)
        assert (seen["claimed"], seen["key"], seen["backend_id"]) == (False, "doc-cold", answer["backend_id"])
        assert seen["pid"] != member
        assert app[keys.DRONE].local[answer["backend_id"]].pool_member is None
        with pytest.raises(ProcessLookupError):
            os.kill(member, 0)  # discarded
        await filled(pool, 1)  # and replaced


async def test_members_count_against_the_nodes_capacity(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    big_pool: Json = {**POOLED, "warm_pool": 5}
    templates: dict[str, Json] = {"pooled": big_pool, "plain": DEMO}
    async with pooled_edge(control, edge_token, tmp_path / "edge", templates, capacity=2) as (url, app):
        pool = pool_of(app)
        await filled(pool, 2)
        pool.reconcile()
        assert pool.size() == 2 and len(demo_children()) == 2
        # A cold start on the full node makes room by stopping a member.
        answer = await connect(url, "doc-plain", "plain")
        seen = await info(answer)
        assert seen["claimed"] is False and seen["key"] == "doc-plain"
        assert pool.size() <= 1 and len(demo_children()) <= 2


async def test_a_draining_node_stops_its_unclaimed_members_and_keeps_claimed_ones(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with pooled_edge(control, edge_token, tmp_path / "edge", {"pooled": POOLED}) as (url, app):
        pool = pool_of(app)
        await filled(pool, 2)
        claimed = await info(await connect(url, "doc-busy", "pooled"))
        await filled(pool, 2)
        async with control.client() as admin:
            r = await admin.post(f"/v1/nodes/{app[keys.NODE_ID]}/drain", json={"draining": True})
            assert r.status_code == 200, r.text
        await send_heartbeat(app)  # the answer says draining
        pool.wake()
        async with asyncio.timeout(TIMEOUT_S):
            await pool.wait_until(lambda p: p.size() == 0 and not p.stopping)
        assert demo_children() == {claimed["pid"]}  # the claimed backend goes by the drain's idle rule
        pool.reconcile()
        assert pool.size() == 0, "no member starts while the node drains"


async def test_a_member_that_dies_is_replaced(control: RunningControl, edge_token: str, tmp_path: Path) -> None:
    async with pooled_edge(control, edge_token, tmp_path / "edge", {"pooled": POOLED}) as (_, app):
        pool = pool_of(app)
        await filled(pool, 2)
        before = set(pool.members)
        victim = min(demo_children())
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(TIMEOUT_S):
            await pool.wait_until(lambda p: len(before & set(p.members)) == 1 and ready_members(p) == 2)
        assert victim not in demo_children() and len(demo_children()) == 2

    # A clean shutdown stops the members (checked after the edge stopped: none is left).
    assert demo_children() == set()


async def test_the_fast_route_starts_the_backend_from_the_connect_answer_without_the_feed(
    control: RunningControl, edge_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pooled_edge(control, edge_token, tmp_path / "edge", {"pooled": POOLED}) as (url, app):
        pool = pool_of(app)
        await filled(pool, 2)
        drone = app[keys.DRONE]

        async def feed_ignored() -> None:
            return None

        monkeypatch.setattr(drone, "_reconcile", feed_ignored)  # the change feed starts nothing now
        async with aiohttp.ClientSession() as s:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            body = {"key": "doc-fast", "template": "pooled"}
            async with s.post(f"{url}/v1/connect", json=body, headers=headers) as r:
                raw = await r.text()
                answer: Json = await r.json()
        assert r.status == 200 and "assignment" not in answer
        secret = app[keys.DRONE].local[answer["backend_id"]].state
        assert secret is not None and secret.secret not in raw, "the backend's secret never reaches a client"
        seen = await info(answer)
        assert (seen["claimed"], seen["key"], seen["fencing_token"]) == (True, "doc-fast", answer["fencing_token"])


async def test_only_edges_get_the_assignment_in_a_connect_answer(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with pooled_edge(control, edge_token, tmp_path / "edge", {"plain": DEMO}) as (_, app):
        async with control.client() as admin:
            by_admin = (await admin.post("/v1/connect", json={"key": "doc-admin", "template": "plain"})).json()
        assert "assignment" not in by_admin
        async with control.client(edge_token) as edge_api:
            by_edge = (await edge_api.post("/v1/connect", json={"key": "doc-edge", "template": "plain"})).json()
        assert by_edge["assignment"]["id"] == by_edge["backend_id"]
        assert by_edge["assignment"]["node_id"] == app[keys.NODE_ID]


async def test_between_equally_loaded_nodes_placement_prefers_one_with_a_ready_member(
    control: RunningControl, edge_token: str
) -> None:
    async with control.client() as admin:
        await add_region(admin, "eu-west")
        template = (await admin.put("/v1/templates/pooled", json=POOLED)).json()["id"]
        other = (await admin.put("/v1/templates/plain", json=DEMO)).json()["id"]

    async def beat(node: str, pools: dict[str, int]) -> None:
        async with control.client(edge_token) as edge_api:
            r = await edge_api.post(
                "/v1/nodes/heartbeat",
                json={"node_id": node, "region": "eu-west", "address": f"http://{node}.test:9000",
                      "capacity": 10, "applied_version": 0, "warm_pools": pools},
            )  # fmt: skip
            assert r.status_code == 200, r.text

    # nd-a sorts first by id; only nd-b has a ready member of `pooled`.
    await beat("nd-a", {other: 3})
    await beat("nd-b", {template: 1})
    async with control.client() as admin:
        pooled = (await admin.post("/v1/connect", json={"key": "doc-tie", "template": "pooled"})).json()
        plain = (await admin.post("/v1/connect", json={"key": "doc-tie-2", "template": "plain"})).json()
        got = (await admin.get(f"/v1/backends/{pooled['backend_id']}")).json()
        got_plain = (await admin.get(f"/v1/backends/{plain['backend_id']}")).json()
    assert got["node"] == "nd-b", "a ready member breaks the tie"
    # Load still comes first: nd-b now runs one more backend than nd-a.
    assert got_plain["node"] == "nd-a"


async def test_a_heartbeat_with_bad_warm_pool_counts_is_400(control: RunningControl, edge_token: str) -> None:
    async with control.client(edge_token) as edge_api:
        for pools in ({"tp-x": -1}, {"tp-x": 1001}, {"tp-" + "x" * 200: 1}, {"tp-x": "many"}):
            r = await edge_api.post(
                "/v1/nodes/heartbeat",
                json={"node_id": "nd-bad", "region": "eu-west", "address": "http://nd-bad.test:9000",
                      "capacity": 10, "applied_version": 0, "warm_pools": pools},
            )  # fmt: skip
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "bad_request"
