"""Node drain: `POST /v1/nodes/{id}/drain` takes a node out of placement, its edge stops the
backends that go idle (never a busy one), and the drain status says when the node is empty."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import pytest

from edge import drain as edge_drain
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.helpers import add_region, cluster, heartbeat
from tests.integration.test_edge_event_loop import running_edge

LONG_IDLE = {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"], "idle_timeout_s": 600}


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """For what no event announces (the edge learns of a drain from its next heartbeat)."""
    deadline = time.monotonic() + timeout_s
    for _ in itertools.count():
        if await check():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _terminated(admin: httpx.AsyncClient, backend_id: str, timeout_s: float = 20.0) -> dict:
    """The backend's `terminated` event, awaited on its Server-Sent Events stream."""
    async with asyncio.timeout(timeout_s), admin.stream("GET", f"/v1/backends/{backend_id}/events") as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and (event := json.loads(line[6:]))["status"] == "terminated":
                return event
    raise AssertionError(f"the events of {backend_id} ended before it terminated")


async def _connect(admin: httpx.AsyncClient, key: str, region: str | None = None) -> httpx.Response:
    body = {"key": key, "template": "demo"} | ({"region": region} if region else {})
    return await admin.post("/v1/connect", json=body)


# ---- the control plane's side --------------------------------------------------------------------


async def test_a_draining_node_gets_no_new_backends(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    assert (await heartbeat(str(admin.base_url), edge_token, "nd-eu-west-2", "eu-west")).status_code == 200
    r = await admin.post("/v1/nodes/nd-eu-west/drain")
    assert r.status_code == 200, r.text
    assert r.json() | {"drain_requested_at": None} == {
        "id": "nd-eu-west",
        "region": "eu-west",
        "draining": True,
        "drain_requested_at": None,
        "backends": 0,
        "stopping": 0,
        "empty": True,
    }
    assert r.json()["drain_requested_at"] is not None
    for i in range(6):
        placed = await _connect(admin, f"drain-{i}")
        assert placed.status_code == 200, placed.text
        got = (await admin.get(f"/v1/backends/{placed.json()['backend_id']}")).json()
        assert got["node"] == "nd-eu-west-2"
    nodes = {n["id"]: n for n in (await admin.get("/v1/regions")).json()[0]["nodes"]}
    assert nodes["nd-eu-west"]["draining"] is True and nodes["nd-eu-west-2"]["draining"] is False
    assert nodes["nd-eu-west-2"]["backends"] == 6


async def test_a_region_whose_nodes_all_drain_sends_new_keys_elsewhere(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west", "us-east"])
    assert (await admin.post("/v1/nodes/nd-eu-west/drain", json={"draining": True})).status_code == 200
    placed = await admin.post("/v1/connect?explain=true", json={"key": "k", "template": "demo", "region": "eu-west"})
    assert placed.status_code == 200, placed.text
    assert placed.json()["region"] == "us-east" and placed.json()["placement"]["reason"] == "pinned+fallback"
    ranking = {row["name"]: row for row in placed.json()["placement"]["ranking"]}
    assert ranking["eu-west"]["why_not"] == "draining"


async def test_ending_a_drain_takes_backends_again(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    await admin.post("/v1/nodes/nd-eu-west/drain")
    refused = await _connect(admin, "before")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_capacity"
    ended = await admin.post("/v1/nodes/nd-eu-west/drain", json={"draining": False})
    assert ended.json()["draining"] is False and ended.json()["drain_requested_at"] is None
    assert (await _connect(admin, "after")).status_code == 200


async def test_drain_status_counts_what_still_runs(admin: httpx.AsyncClient, edge_token: str) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    backend_id = (await _connect(admin, "running")).json()["backend_id"]
    drained = (await admin.post("/v1/nodes/nd-eu-west/drain")).json()
    assert (drained["backends"], drained["empty"]) == (1, False)
    report = {"id": backend_id, "status": "draining", "termination_reason": "idle"}
    assert (await heartbeat(str(admin.base_url), edge_token, "nd-eu-west", "eu-west", backends=[report])).json()[
        "draining"
    ] is True
    status = (await admin.get("/v1/nodes/nd-eu-west/drain")).json()
    assert (status["backends"], status["stopping"], status["empty"]) == (0, 1, False)
    report["status"] = "terminated"
    await heartbeat(str(admin.base_url), edge_token, "nd-eu-west", "eu-west", backends=[report])
    assert (await admin.get("/v1/nodes/nd-eu-west/drain")).json()["empty"] is True


async def test_drain_refuses_bad_input_and_other_scopes(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, client_token: str
) -> None:
    await add_region(admin, "eu-west")
    await heartbeat(str(admin.base_url), edge_token, "nd-eu-west", "eu-west")
    unknown = await admin.post("/v1/nodes/nd-nobody/drain")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    for path in ("/v1/nodes/nd-a%2F..%2Fb/drain", "/v1/nodes/xx-1/drain", "/v1/nodes/nd-" + "a" * 80 + "/drain"):
        r = await admin.post(path)
        assert r.status_code in (400, 404) and "error" in r.json(), (path, r.text)
    for body in ({"draining": "yes"}, {"draining": True, "extra": 1}, [1]):
        r = await admin.post("/v1/nodes/nd-eu-west/drain", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
    for token in (client_token, edge_token):
        async with control.client(token) as other:
            r = await other.post("/v1/nodes/nd-eu-west/drain")
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await admin.get("/v1/nodes/nd-eu-west/drain")).json()["draining"] is False


# ---- with an edge running real backend processes ----------------------------------------------------


@pytest.fixture
def quick_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain's idle time cut to 1 s so the test does not wait the production 10 s."""
    monkeypatch.setattr(edge_drain, "DRAIN_IDLE_AFTER_S", 1.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_drain_empties_a_node_of_real_processes_leaving_busy_ones_until_they_go_idle(
    control: RunningControl, edge_token: str, tmp_path: Path, quick_drain: None
) -> None:
    async with (
        running_edge(control, edge_token, tmp_path / "edge", {"demo": LONG_IDLE}) as edge_url,
        control.client() as admin,
        aiohttp.ClientSession() as http,
    ):
        answers = [(await _connect(admin, f"proc-{i}")).json() for i in range(3)]
        pids = {}
        for a in answers:
            async with http.get(a["url"] + "info") as r:
                pids[a["backend_id"]] = (await r.json())["pid"]
        busy = answers[0]
        ws = await http.ws_connect(busy["url"].replace("http", "ws", 1) + "ws")
        node_id = (await admin.get(f"/v1/backends/{busy['backend_id']}")).json()["node"]

        assert (await admin.post(f"/v1/nodes/{node_id}/drain")).json()["backends"] == 3

        async def edge_status() -> dict:
            async with http.get(f"{edge_url}/v1/edge/status") as r:
                return await r.json()

        for a in answers[1:]:
            event = await _terminated(admin, a["backend_id"])
            assert event["reason"] == "idle", event
            assert not _alive(pids[a["backend_id"]])
        assert (await edge_status())["draining"] is True
        status = (await admin.get(f"/v1/nodes/{node_id}/drain")).json()
        assert status["empty"] is False and status["backends"] == 1

        # The busy backend keeps serving its WebSocket through the drain, well past the idle time.
        for i in range(5):
            await ws.send_str(f"still here {i}")
            assert (await ws.receive(timeout=10)).data == f"still here {i}"
            await asyncio.sleep(0.5)
        assert _alive(pids[busy["backend_id"]])
        new_key = await _connect(admin, "while-draining")
        assert new_key.status_code == 503 and new_key.json()["error"]["code"] == "no_capacity"

        await ws.close()

        assert (await _terminated(admin, busy["backend_id"]))["reason"] == "idle"
        assert (await admin.get(f"/v1/nodes/{node_id}/drain")).json()["empty"] is True
        assert not _alive(pids[busy["backend_id"]])
        assert (await edge_status())["backends_running"] == 0


async def test_the_edge_leaves_its_drain_when_the_control_plane_ends_it(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with running_edge(control, edge_token, tmp_path / "edge") as edge_url, control.client() as admin:
        async with aiohttp.ClientSession() as http, http.get(f"{edge_url}/v1/edge/status") as r:
            node_id = (await r.json())["node_id"]
            assert (await r.json())["draining"] is False
        await admin.post(f"/v1/nodes/{node_id}/drain")
        async with aiohttp.ClientSession() as http:

            def draining(expected: bool) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    async with http.get(f"{edge_url}/v1/edge/status") as r:
                        return (await r.json())["draining"] is expected

                return check

            await _eventually(draining(True))
            await admin.post(f"/v1/nodes/{node_id}/drain", json={"draining": False})
            await _eventually(draining(False))
        assert (await _connect(admin, "after-drain", "eu-west")).status_code == 200


# ---- the CLI ------------------------------------------------------------------------------------------


async def _cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meridian",
        "edge",
        "drain",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200", "MERIDIAN_TOKEN": ADMIN_TOKEN},
    )


async def test_meridian_edge_drain_waits_until_the_node_is_empty(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    await cluster(admin, edge_token, ["eu-west"])
    backend_id = (await _connect(admin, "cli")).json()["backend_id"]
    proc = await _cli("nd-eu-west", "--wait", "--url", control.url)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"nd-eu-west (eu-west): draining, 1 live backend(s)" in first, first
        report = {"id": backend_id, "status": "terminated", "termination_reason": "idle"}
        await heartbeat(control.url, edge_token, "nd-eu-west", "eu-west", backends=[report])
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out
    assert b"empty" in out.splitlines()[-1]
    undo = await _cli("nd-eu-west", "--undo", "--json", "--url", control.url)
    out, _ = await asyncio.wait_for(undo.communicate(), 30)
    assert undo.returncode == 0 and b'"draining": false' in out, out


async def test_meridian_edge_drain_refuses_what_is_not_a_node_id(control: RunningControl) -> None:
    proc = await _cli("../../v1/tokens", "--url", control.url)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"not a node id" in out, out
    missing = await _cli("nd-nobody", "--url", control.url)
    out, _ = await asyncio.wait_for(missing.communicate(), 30)
    assert missing.returncode == 1 and b"not_found" in out, out
