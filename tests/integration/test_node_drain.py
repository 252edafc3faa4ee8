"""Node drain: `POST /v1/nodes/{id}/drain` takes a node out of placement, its edge stops the
backends that go idle (never a busy one), and the drain status says when the node is empty."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from edge import drain as edge_drain
from edge import keys
from edge.app import EdgeServer, send_heartbeat, start_edge
from edge.drain import drain_before_exit
from edge.settings import EdgeSettings
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


async def _terminated(admin: httpx.AsyncClient, backend_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The backend's `terminated` event, awaited on its Server-Sent Events stream."""
    async with asyncio.timeout(timeout_s), admin.stream("GET", f"/v1/backends/{backend_id}/events") as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and (event := json.loads(line[6:]))["status"] == "terminated":
                result: dict[str, Any] = event
                return result
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

        async def edge_status() -> dict[str, Any]:
            async with http.get(f"{edge_url}/v1/edge/status") as r:
                result: dict[str, Any] = await r.json()
                return result

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


# ---- an edge told to exit drains itself first (SIGTERM with shutdown_drain_s) ---------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _edge_app(control: RunningControl, edge_token: str, data_dir: Path) -> AsyncIterator[EdgeServer]:
    async with control.client() as admin:
        assert (await admin.put("/v1/templates/demo", json=LONG_IDLE)).status_code == 200
        version = (await admin.get("/healthz")).json()["version"]
    settings = EdgeSettings(
        region="eu-west",
        control_url=control.url,
        token=edge_token,
        port=_free_port(),
        data_dir=data_dir,
        shutdown_drain_s=60,
    )
    edge = await start_edge(settings)
    try:
        await send_heartbeat(edge.app)
        await asyncio.wait_for(edge.app[keys.SYNC_LOOP].wait_applied(version), 30)
        yield edge
    finally:
        await edge.stop()


async def _exit_drain(edge: EdgeServer, timeout_s: float) -> bool:
    app = edge.app
    return await drain_before_exit(app[keys.DRAIN], app[keys.DRONE], lambda: send_heartbeat(app), timeout_s)


async def test_an_edge_told_to_exit_drains_itself_before_stopping(
    control: RunningControl, edge_token: str, tmp_path: Path, quick_drain: None
) -> None:
    async with (
        _edge_app(control, edge_token, tmp_path / "edge") as edge,
        control.client() as admin,
        aiohttp.ClientSession() as http,
    ):
        busy, idle = [(await _connect(admin, f"exit-{i}")).json() for i in range(2)]
        async with http.get(busy["url"] + "info") as r:
            assert r.status == 200
        ws = await http.ws_connect(busy["url"].replace("http", "ws", 1) + "ws")
        exiting = asyncio.create_task(_exit_drain(edge, 60))
        try:
            assert (await _terminated(admin, idle["backend_id"]))["reason"] == "idle"
            refused = await _connect(admin, "exit-new")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_capacity"
            node = (await admin.get("/v1/regions")).json()[0]["nodes"][0]
            assert node["draining"] is True
            assert not exiting.done(), "a backend with an open WebSocket keeps the edge draining"
            await ws.send_str("still here")
            assert (await ws.receive(timeout=10)).data == "still here"
            await ws.close()
            assert await asyncio.wait_for(exiting, 20) is True
        finally:
            exiting.cancel()
        assert (await _terminated(admin, busy["backend_id"]))["reason"] == "idle"
    # The flag was the old process's: the node's next start takes backends again.
    async with _edge_app(control, edge_token, tmp_path / "edge"), control.client() as admin:
        assert (await _connect(admin, "exit-after-restart")).status_code == 200


async def test_an_exit_drain_gives_up_after_its_timeout(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with (
        _edge_app(control, edge_token, tmp_path / "edge") as edge,
        control.client() as admin,
        aiohttp.ClientSession() as http,
    ):
        busy = (await _connect(admin, "stubborn")).json()
        async with http.ws_connect(busy["url"].replace("http", "ws", 1) + "ws"):
            assert await asyncio.wait_for(_exit_drain(edge, 0.5), 10) is False


async def test_sigterm_to_meridian_edge_serve_drains_then_exits(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    """The real command, as Nomad stops it: SIGTERM, then it drains until its WebSocket closes."""
    async with control.client() as admin:
        assert (await admin.put("/v1/templates/demo", json=LONG_IDLE)).status_code == 200
    port = _free_port()
    edge = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meridian", "edge", "serve", "--region", "eu-west", "--port", str(port),
        "--control-url", control.url, "--token", edge_token, "--data-dir", str(tmp_path / "edge"),
        "--shutdown-drain-s", "60",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with control.client() as admin, aiohttp.ClientSession() as http:

            async def registered() -> bool:
                return bool((await admin.get("/v1/regions")).json())

            await _eventually(registered, 60)
            placed = await _eventually_connect(admin, "sigterm")

            async def serving() -> bool:  # the new edge's replica has the token's signing key
                async with http.get(placed["url"] + "info") as r:
                    return r.status == 200

            await _eventually(serving, 30)
            ws = await http.ws_connect(placed["url"].replace("http", "ws", 1) + "ws")
            edge.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return bool((await admin.get("/v1/regions")).json()[0]["nodes"][0]["draining"])

            await _eventually(draining, 30)
            await ws.send_str("through the drain")
            assert (await ws.receive(timeout=10)).data == "through the drain"
            assert edge.returncode is None
            await ws.close()
            assert await asyncio.wait_for(edge.wait(), 60) == 0
            assert (await _terminated(admin, placed["backend_id"]))["status"] == "terminated"
    finally:
        if edge.returncode is None:
            edge.kill()
            await edge.wait()


async def _eventually_connect(admin: httpx.AsyncClient, key: str) -> dict[str, Any]:
    """A connect once the new edge's node is known healthy and synced enough to run it."""
    answer: dict[str, Any] = {}

    async def placed() -> bool:
        r = await _connect(admin, key)
        answer.update(r.json())
        return r.status_code == 200

    await _eventually(placed, 30)
    return answer
