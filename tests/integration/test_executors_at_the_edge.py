"""Executors selected and used through a real edge and control plane.

Nomad is the HTTP DOUBLE of ``nomad_double.py`` (there is no Nomad binary here): it runs each job's
task as a local process, so the connect → ready → proxied 200 → idle stop → purge path is real
everywhere but inside Nomad itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from edge import keys
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.integration.edge_support import connect, edge_url, running_edges

from .nomad_double import NomadDouble
from .nomad_setup import DEMO_ARGV, REPO

NOMAD_RAW: dict[str, Any] = {"executor": "nomad", "argv": DEMO_ARGV, "env": {"PYTHONPATH": REPO}, "idle_timeout_s": 1}
NOMAD_IMAGE: dict[str, Any] = {"executor": "nomad", "image": "meridian/demo:test", "env": {"PYTHONPATH": REPO}}
PROCESS: dict[str, Any] = {"executor": "process", "argv": DEMO_ARGV, "env": {"PYTHONPATH": REPO}}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def wait_ready(answer: dict[str, Any]) -> None:
    """The first request waits (at the edge) for the backend to start; the demo serves /info."""
    async with aiohttp.ClientSession() as s, s.get(answer["url"] + "info") as r:
        assert r.status == 200, await r.text()


async def backend_row(control: RunningControl, backend_id: str) -> dict[str, Any]:
    async with control.client() as admin:
        r = await admin.get(f"/v1/backends/{backend_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


async def wait_terminated(control: RunningControl, backend_id: str, within_s: float = 30) -> dict[str, Any]:
    """Follow the backend's status events (SSE) until it is terminated."""
    async with control.client() as admin, asyncio.timeout(within_s):
        async with admin.stream("GET", f"/v1/backends/{backend_id}/events", timeout=None) as events:
            async for line in events.aiter_lines():
                if '"terminated"' in line:
                    return await backend_row(control, backend_id)
    raise AssertionError("the event stream ended before the backend terminated")


async def test_nomad_backend_end_to_end_connect_ready_proxied_idle_stop_purged(
    control: RunningControl, edge_token: str, tmp_path: Path, double: NomadDouble
) -> None:
    templates = {"nomad-raw": NOMAD_RAW, "nomad-image": NOMAD_IMAGE}
    async with running_edges(
        control, edge_token, tmp_path, ["eu-west"], templates, nomad_addr=double.url, idle_check_s=0.2
    ) as (edge,):
        assert edge.app[keys.EXECUTORS].kinds == ["nomad", "process"]
        answer = await connect(edge, "doc-nomad", template="nomad-raw")
        await wait_ready(answer)
        async with aiohttp.ClientSession() as s, s.get(answer["url"] + "info") as r:
            assert r.status == 200
            info = await r.json()
        assert info["backend_id"] == answer["backend_id"] and info["proxied"] is True

        async with control.client() as admin:  # its logs, read from Nomad by the edge, via the control plane
            logs = await admin.get(f"/v1/backends/{answer['backend_id']}/logs", params={"tail": "10"})
            assert logs.status_code == 200 and "meridian demo backend listening" in logs.text

        job_id = f"meridian-{answer['backend_id']}"
        (job,) = [j for j in double.registered if j["ID"] == job_id]
        (task,) = job["TaskGroups"][0]["Tasks"]
        assert task["Driver"] == "raw_exec" and task["Config"] == {"command": DEMO_ARGV[0], "args": DEMO_ARGV[1:]}
        assert job["Datacenters"] == ["eu-west"]
        (alloc,) = double.allocs_of(job_id)
        local = edge.app[keys.DRONE].local[answer["backend_id"]]
        assert local.address == f"127.0.0.1:{alloc.ports['http']}"  # from AllocatedResources.Shared.Ports

        # Idle for idle_timeout_s: the edge stops it, which purges the job.
        final = await wait_terminated(control, answer["backend_id"])
        assert final["termination_reason"] == "idle"
        assert job_id in double.purged and job_id not in double.jobs
        assert ("DELETE", f"/v1/job/{job_id}", {"purge": "True"}) in double.requests
        assert alloc.client_status == "complete"

        # The docker driver path, through the same edge.
        image = await connect(edge, "doc-image", template="nomad-image")
        await wait_ready(image)
        (job,) = [j for j in double.registered if j["ID"] == f"meridian-{image['backend_id']}"]
        assert job["TaskGroups"][0]["Tasks"][0]["Driver"] == "docker"


async def test_a_template_for_an_executor_the_region_lacks_is_refused_at_connect(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    templates = {"nomad-raw": NOMAD_RAW, "proc": PROCESS}
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], templates) as (edge,):
        assert edge.app[keys.EXECUTORS].kinds == ["process"]
        async with control.client() as admin:
            r = await admin.post("/v1/connect", json={"key": "k-nomad", "template": "nomad-raw", "region": "eu-west"})
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "executor_unavailable"
            assert error["fields"] == {"template": "nomad-raw", "executor": "nomad", "region": "eu-west"}
            assert "nomad" in error["message"] and "eu-west" in error["message"]
            # Nothing was left scheduled, and the key is still free for a template that can run.
            listed = (await admin.get("/v1/backends", params={"key": "k-nomad"})).json()
            assert listed == []
            ok = await admin.post("/v1/connect", json={"key": "k-nomad", "template": "proc", "region": "eu-west"})
            assert ok.status_code == 200, ok.text
        # The same refusal through the edge's own connect.
        async with aiohttp.ClientSession() as s:
            body = {"key": "k-nomad-2", "template": "nomad-raw"}
            async with s.post(f"{edge_url(edge)}/v1/connect", json=body, headers=AUTH) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["code"] == "executor_unavailable"


async def test_backend_logs_from_the_edge_and_through_the_control_plane(
    control: RunningControl, edge_token: str, client_token: str, tmp_path: Path
) -> None:
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], {"proc": PROCESS}) as (edge,):
        answer = await connect(edge, "doc-logs", template="proc")
        await wait_ready(answer)
        backend_id = answer["backend_id"]
        path = f"/v1/backends/{backend_id}/logs"
        async with httpx.AsyncClient(base_url=edge_url(edge), timeout=30) as at_edge:
            r = await at_edge.get(path, params={"tail": "5"}, headers=AUTH)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            assert "meridian demo backend listening" in r.text
            assert (await at_edge.get(path)).status_code == 401
            forbidden = await at_edge.get(path, headers={"Authorization": f"Bearer {client_token}"})
            assert forbidden.status_code == 403  # a client token may not read logs
            assert (await at_edge.get(path, params={"tail": "-1"}, headers=AUTH)).status_code == 400
            assert (await at_edge.get(path, params={"follow": "maybe"}, headers=AUTH)).status_code == 400
            missing = await at_edge.get("/v1/backends/bk-none/logs", headers=AUTH)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

        async with control.client() as admin:
            via = await admin.get(path, params={"tail": "5"})
            assert via.status_code == 200, via.text
            assert "meridian demo backend listening" in via.text
            client = control.client(client_token)
            async with client:
                assert (await client.get(path)).status_code == 403
            assert (await admin.get("/v1/backends/bk-unknown/logs")).status_code == 404

            # follow: lines arrive while it runs, and the stream ends when the backend is stopped.
            async with admin.stream("GET", path, params={"tail": "0", "follow": "true"}, timeout=None) as stream:
                chunks = stream.aiter_raw()
                terminate = await admin.post(f"/v1/backends/{backend_id}/terminate", json={})
                assert terminate.status_code == 200
                rest = b"".join([c async for c in chunks])
            assert b"ended (exit code" in rest


async def test_an_edge_restarted_with_the_nomad_executor_adopts_its_jobs(
    control: RunningControl, edge_token: str, tmp_path: Path, double: NomadDouble
) -> None:
    """The edge leaves for an upgrade (on_exit keep) with a Nomad backend running; the next edge on
    the same data directory finds the job it registered and takes over its allocation: no second
    job, no `lost`, the same process serving."""
    templates = {"nomad-image": NOMAD_IMAGE}
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], templates, nomad_addr=double.url) as (edge,):
        answer = await connect(edge, "doc-nomad-upgrade", template="nomad-image")
        await wait_ready(answer)
        edge.app[keys.EXIT_PLAN].keep_backends = True
    job_id = f"meridian-{answer['backend_id']}"
    (alloc,) = double.allocs_of(job_id)
    assert alloc.proc is not None and alloc.client_status == "running", "leaving stopped nothing"
    pid = alloc.proc.pid
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], templates, nomad_addr=double.url) as (edge,):
        local = edge.app[keys.DRONE].local[answer["backend_id"]]
        assert local.status.value == "ready" and local.address == f"127.0.0.1:{alloc.ports['http']}"
        again = await connect(edge, "doc-nomad-upgrade", template="nomad-image")
        assert again["backend_id"] == answer["backend_id"] and not again["spawned"]
        # (the answer's URL names the region's edge URL, still the first edge's port here)
        async with aiohttp.ClientSession() as s, s.get(f"{edge_url(edge)}/{again['token']}/info") as r:
            assert (await r.json())["pid"] == pid, "the same process serves"
        assert [j["ID"] for j in double.registered].count(job_id) == 1, "no second job"
        async with control.client() as admin:
            assert (await admin.get(f"/v1/backends/{answer['backend_id']}")).json()["status"] == "ready"
