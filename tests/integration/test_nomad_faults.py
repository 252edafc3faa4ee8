"""The Nomad executor when Nomad misbehaves, and the double's strictness — against the HTTP DOUBLE
of ``nomad_double.py`` (there is no Nomad binary on these machines)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from edge.executors import ExecutorUnavailable, StartFailed
from edge.executors.nomad import NomadExecutor, nomad_job
from sync.models import TemplateSpec, TerminationReason

from .nomad_double import NomadDouble
from .nomad_setup import DEMO_ARGV, REPO, nomad_executor, nomad_spec
from .test_process_executor import Recorder, request, wait_gone


@pytest.fixture
async def executor(double: NomadDouble, recorder: Recorder) -> AsyncIterator[NomadExecutor]:
    # Slow polling: what these tests see at once comes from Nomad's blocking queries.
    async with nomad_executor(double, recorder, monitor_interval_s=0.5) as ex:
        yield ex


@pytest.mark.parametrize(
    ("status", "message"),
    [(403, "Permission denied"), (400, "1 error occurred:\n\t* Task group backend validation failed")],
)
async def test_registration_refused_is_a_start_failure_in_nomads_words(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder, status: int, message: str
) -> None:
    double.refuse_register = (status, message)
    req = request(nomad_spec("meridian/demo:test"))
    with pytest.raises(StartFailed, match=f"nomad did not accept job meridian-{req.backend_id}") as info:
        await executor.start(req)
    assert not isinstance(info.value, ExecutorUnavailable)  # retrying will not help
    assert f"HTTP {status}: {message.splitlines()[0]}" in str(info.value)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED
    assert double.allocs == {}


async def test_failed_allocation_carries_nomads_description(executor: NomadExecutor, recorder: Recorder) -> None:
    req = request(nomad_spec("no-such-image:1"))
    with pytest.raises(StartFailed, match="allocation failed before it was ready: Failed tasks; Failed to pull image"):
        await executor.start(req)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_allocation_lost_after_ready_is_reported_lost(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    req = request(nomad_spec("meridian/demo:test"))
    await executor.start(req)
    (alloc,) = double.allocs_of(f"meridian-{req.backend_id}")
    assert alloc.proc is not None
    double.lose(alloc)
    # The watch is a blocking query: the change is seen at once, not after a polling interval.
    exit_ = await recorder.wait(req.backend_id, within_s=5)
    assert exit_.reason == TerminationReason.LOST
    assert executor.status(req.backend_id) == "exited"
    await wait_gone(alloc.proc.pid)
    watched = [q for m, p, q in double.requests if p == f"/v1/allocation/{alloc.id}" and "index" in q]
    assert watched and all(q["wait"].endswith("ms") for q in watched)


async def test_nomad_answering_500_after_ready_is_ridden_out(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    req = request(nomad_spec("meridian/demo:test"))
    await executor.start(req)
    double.fail_with = 500
    await asyncio.wait_for(double.failed_a_request.wait(), 10)
    assert executor.status(req.backend_id) == "ready" and recorder.exits == []
    # A stop while Nomad cannot answer fails loudly and leaves the backend as it was.
    with pytest.raises(ExecutorUnavailable, match="HTTP 500"):
        await executor.stop(req.backend_id, hard=False, reason=TerminationReason.IDLE)
    assert executor.status(req.backend_id) == "ready" and recorder.exits == []
    double.fail_with = None
    (alloc,) = double.allocs_of(f"meridian-{req.backend_id}")
    assert alloc.proc is not None
    os.kill(alloc.proc.pid, signal.SIGKILL)  # the watch resumed: a crash is still noticed
    exit_ = await recorder.wait(req.backend_id)
    assert exit_.reason == TerminationReason.FAILED and exit_.exit_code == -signal.SIGKILL


async def test_raw_exec_runs_the_templates_argv(executor: NomadExecutor, double: NomadDouble) -> None:
    spec = TemplateSpec(executor="nomad", argv=DEMO_ARGV, env={"PYTHONPATH": REPO})
    req = request(spec)
    address = await executor.start(req)
    (job,) = double.registered
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == "raw_exec"
    assert task["Config"] == {"command": sys.executable, "args": ["-m", "meridian.demo"]}
    assert task["LogConfig"] == {"MaxFiles": 2, "MaxFileSizeMB": 2}
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/info") as r:
        assert (await r.json())["backend_id"] == req.backend_id
    await executor.stop(req.backend_id, hard=False, reason=TerminationReason.REQUESTED)
    assert f"meridian-{req.backend_id}" in double.purged


# ---- the double is as strict as Nomad where Nomad is strict --------------------------------------


async def post_job(double: NomadDouble, body: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(f"{double.url}/v1/jobs", json=body) as r:
        return r.status, await r.text()


def valid_job() -> dict[str, Any]:
    return nomad_job(request(nomad_spec("meridian/demo:test")), grace_s=1.0)


async def test_the_double_refuses_what_nomad_refuses(double: NomadDouble) -> None:
    assert (await post_job(double, valid_job()))[0] == 400  # no Job wrapper
    assert (await post_job(double, [valid_job()]))[0] == 400
    unknown_top = await post_job(double, {"Job": valid_job(), "Surprise": True})
    assert unknown_top == (400, "1 error occurred:\n\t* json: unknown field 'Surprise' in request")
    job = valid_job()
    job["TaskGroups"][0]["Tasks"][0]["Resources"] = {"MemoryMb": 64}  # a misspelt field
    status, text = await post_job(double, {"Job": job})
    assert status == 400 and "'MemoryMb'" in text and "TaskGroups[0].Tasks[0].Resources" in text
    job = valid_job()
    job["TaskGroups"][0]["Count"] = "1"
    status, text = await post_job(double, {"Job": job})
    assert status == 400 and "cannot unmarshal string" in text and "Count" in text
    job = valid_job()
    job["TaskGroups"][0]["Tasks"][0]["Env"]["N"] = 1
    assert (await post_job(double, {"Job": job}))[0] == 400
    assert double.registered == [] and double.allocs == {}
    assert (await post_job(double, {"Job": valid_job()}))[0] == 200


async def test_blocking_queries_wait_for_a_change(double: NomadDouble) -> None:
    job = valid_job()
    assert (await post_job(double, {"Job": job}))[0] == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{double.url}/v1/job/{job['ID']}/allocations") as r:
            (stub,) = await r.json()
            assert "AllocatedResources" not in stub  # stubs have no ports: read the allocation
        url = f"{double.url}/v1/allocation/{stub['ID']}"
        async with s.get(url) as r:  # read while pending: the allocation starts
            index = int(r.headers["X-Nomad-Index"])
        while True:  # blocking reads, each answered only once the allocation changed
            async with s.get(url, params={"index": str(index), "wait": "5s"}) as r:
                body = await r.json()
                new_index = int(r.headers["X-Nomad-Index"])
            assert new_index > index
            index = new_index
            if body["ClientStatus"] == "running":
                break
        ports = body["AllocatedResources"]["Shared"]["Ports"]
        assert [p["Label"] for p in ports] == ["http"]
        # Nothing changes: the query returns after its wait with the same index.
        async with s.get(url, params={"index": str(index), "wait": "50ms"}) as r:
            assert int(r.headers["X-Nomad-Index"]) == index
        async with s.get(url, params={"index": "x", "wait": "5s"}) as r:
            assert r.status == 400
        async with s.delete(f"{double.url}/v1/job/{job['ID']}", params={"purge": "true"}) as r:
            assert r.status == 200


async def test_logs_of_a_nomad_backend_tail_and_follow(executor: NomadExecutor, double: NomadDouble) -> None:
    req = request(nomad_spec("meridian/demo:test"))
    await executor.start(req)
    head = await executor.read_logs(req.backend_id, tail=5, follow=False)
    assert head is not None
    text = b"".join([chunk async for chunk in head])
    assert b"meridian demo backend listening" in text
    follow = await executor.read_logs(req.backend_id, tail=0, follow=True)
    assert follow is not None
    await executor.stop(req.backend_id, hard=False, reason=TerminationReason.REQUESTED)

    async def drain() -> list[bytes]:
        return [chunk async for chunk in follow]

    await asyncio.wait_for(drain(), 10)  # the follow ends once the backend has ended and all was read
    assert await executor.read_logs("bk-unknown", tail=5, follow=False) is None
    (alloc,) = double.allocs_of(f"meridian-{req.backend_id}")
    reads = [q for m, p, q in double.requests if p == f"/v1/client/fs/logs/{alloc.id}"]
    assert reads and all(q["plain"] == "true" and q["task"] == "backend" for q in reads)
