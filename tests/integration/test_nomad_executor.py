"""The Nomad executor against a double of the Nomad HTTP API.

A DOUBLE, because no Nomad binary (nor Docker) is available on this machine: ``nomad_double.py``
answers the documented API shapes and runs each job's "image" as a local process on the port it
allocated, so registration, allocation polling, the address taken from
``AllocatedResources.Shared.Ports``, the readiness probe and the purge are all exercised for real
over loopback HTTP — only the Nomad server itself is simulated.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from edge.executors import BackendExit, ExecutorError, ExecutorUnavailable, StartFailed, StartRefused
from edge.executors.nomad import NomadExecutor, nomad_job
from sync.models import TemplateSpec, TerminationReason

from .nomad_double import NomadDouble
from .nomad_setup import nomad_executor, nomad_spec
from .test_process_executor import Recorder, dead, request, wait_gone


@pytest.fixture
async def executor(double: NomadDouble, recorder: Recorder) -> AsyncIterator[NomadExecutor]:
    async with nomad_executor(double, recorder, monitor_interval_s=0.05) as ex:
        yield ex


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens once the socket is closed


async def test_register_allocate_probe_ready_then_stop_purges(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    req = request(nomad_spec("meridian/demo:test", memory_mb=256, cpu_mhz=500), region="us-east")
    address = await executor.start(req)
    assert executor.status(req.backend_id) == "ready"

    job_id = f"meridian-{req.backend_id}"
    (job,) = double.registered
    assert job == nomad_job(req, grace_s=2.0)
    assert job["ID"] == job_id and job["Type"] == "service" and job["Datacenters"] == ["us-east"]
    (group,) = job["TaskGroups"]
    (task,) = group["Tasks"]
    assert group["Networks"] == [{"DynamicPorts": [{"Label": "http"}]}]
    assert group["RestartPolicy"]["Attempts"] == 0 and group["ReschedulePolicy"]["Attempts"] == 0
    assert task["Driver"] == "docker" and task["Config"] == {"image": "meridian/demo:test", "ports": ["http"]}
    assert task["Resources"] == {"CPU": 500, "MemoryMB": 256}
    assert task["Env"]["PORT"] == "${NOMAD_PORT_http}"
    assert task["Env"]["MERIDIAN_FENCING_TOKEN"] == "7"

    # The address is the allocation's http port, and the executor saw the allocation pending first.
    (alloc,) = double.allocs_of(job_id)
    assert address == f"127.0.0.1:{alloc.ports['http']}"
    assert alloc.statuses_served[0] == "pending" and "running" in alloc.statuses_served
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/info") as r:
        info = await r.json()
    assert info["backend_id"] == req.backend_id
    assert info["region"] == "us-east" and info["key"] == "doc-42" and info["fencing_token"] == 7
    assert alloc.proc is not None
    pid = alloc.proc.pid

    await executor.stop(req.backend_id, hard=False, reason=TerminationReason.REQUESTED)
    assert ("DELETE", f"/v1/job/{job_id}", {"purge": "True"}) in double.requests
    assert job_id in double.purged and job_id not in double.jobs
    assert alloc.client_status == "complete"
    await wait_gone(pid)
    assert dead(pid)
    # The demo exits 0 on SIGTERM; the exit code comes from the task's Terminated event.
    assert recorder.of(req.backend_id) == BackendExit(req.backend_id, 0, TerminationReason.REQUESTED)
    assert executor.status(req.backend_id) == "exited"


async def test_nomad_unreachable_is_a_typed_error(recorder: Recorder) -> None:
    port = closed_port()
    executor = NomadExecutor(recorder, address=f"http://127.0.0.1:{port}", request_timeout_s=2)
    req = request(nomad_spec("meridian/demo:test"))
    with pytest.raises(ExecutorUnavailable, match=f"nomad at http://127.0.0.1:{port} is unavailable") as info:
        await executor.start(req)
    assert isinstance(info.value, ExecutorError) and not isinstance(info.value, StartFailed)
    assert info.value.__cause__ is not None  # the python-nomad exception, chained
    assert recorder.of(req.backend_id) == BackendExit(req.backend_id, None, TerminationReason.FAILED)
    await executor.close()


async def test_nomad_without_leader_is_unavailable(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    double.fail_with = 500
    req = request(nomad_spec("meridian/demo:test"))
    with pytest.raises(ExecutorUnavailable, match="HTTP 500: No cluster leader"):
        await executor.start(req)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_allocation_that_fails_before_ready_is_a_start_failure(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    req = request(nomad_spec("crash:3"))
    with pytest.raises(StartFailed, match="allocation failed") as info:
        await executor.start(req)
    assert info.value.exit_code == 3
    assert f"meridian-{req.backend_id}" in double.purged
    assert recorder.of(req.backend_id) == BackendExit(req.backend_id, 3, TerminationReason.FAILED)


async def test_image_that_cannot_start_is_a_start_failure(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    req = request(nomad_spec("no-such-image:latest"))
    with pytest.raises(StartFailed, match="allocation failed") as info:
        await executor.start(req)
    assert info.value.exit_code is None
    assert f"meridian-{req.backend_id}" in double.purged


async def test_not_ready_in_time_is_purged(executor: NomadExecutor, double: NomadDouble, recorder: Recorder) -> None:
    req = request(nomad_spec("silent:1", start_timeout_s=1))
    with pytest.raises(StartFailed, match="not ready within 1s"):
        await executor.start(req)
    job_id = f"meridian-{req.backend_id}"
    assert job_id in double.purged
    (alloc,) = double.allocs_of(job_id)
    assert alloc.proc is not None
    await wait_gone(alloc.proc.pid)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_task_crash_after_ready_is_reported(
    executor: NomadExecutor, double: NomadDouble, recorder: Recorder
) -> None:
    req = request(nomad_spec("meridian/demo:test"))
    await executor.start(req)
    (alloc,) = double.allocs_of(f"meridian-{req.backend_id}")
    assert alloc.proc is not None
    os.kill(alloc.proc.pid, signal.SIGKILL)
    exit_ = await recorder.wait(req.backend_id)
    assert exit_ == BackendExit(req.backend_id, -signal.SIGKILL, TerminationReason.FAILED)
    assert executor.status(req.backend_id) == "exited"


async def test_close_purges_every_job_and_refuses_new_starts(double: NomadDouble, recorder: Recorder) -> None:
    executor = NomadExecutor(recorder, address=double.url, grace_s=2.0, poll_interval_s=0.02)
    reqs = [request(nomad_spec("meridian/demo:test")) for _ in range(2)]
    for req in reqs:
        await executor.start(req)
    await executor.close()
    assert double.jobs == {}
    assert {recorder.of(r.backend_id).reason for r in reqs} == {TerminationReason.REQUESTED}
    with pytest.raises(StartRefused):
        await executor.start(request(nomad_spec("meridian/demo:test")))
    with pytest.raises(StartRefused, match="not a nomad template"):
        await NomadExecutor(recorder, address=double.url).start(
            request(TemplateSpec(executor="process", argv=["true"]))
        )


async def test_a_restarted_edge_adopts_its_running_jobs_and_registers_nothing(
    double: NomadDouble, recorder: Recorder
) -> None:
    """An edge process that left for an upgrade (detach) and the next one on the same node: the
    running job is taken over (same allocation, same process), the others are reported gone and
    purged, and nothing is registered again."""
    before = NomadExecutor(recorder, address=double.url, grace_s=2.0, poll_interval_s=0.02)
    running, crashed = (request(nomad_spec("meridian/demo:test")) for _ in range(2))
    address = await before.start(running)
    await before.start(crashed)
    await before.detach()
    assert recorder.exits == [] and len(double.registered) == 2, "leaving stops nothing"
    (alloc,) = double.allocs_of(f"meridian-{running.backend_id}")
    (gone,) = double.allocs_of(f"meridian-{crashed.backend_id}")
    assert alloc.proc is not None and gone.proc is not None
    pid = alloc.proc.pid
    os.kill(gone.proc.pid, signal.SIGKILL)  # dies while no edge watches it
    await wait_gone(gone.proc.pid)

    async with nomad_executor(double, recorder, monitor_interval_s=0.05) as after:
        assert await after.adopt(running) == address
        assert after.status(running.backend_id) == "ready"
        assert await after.adopt(crashed) is None
        assert f"meridian-{crashed.backend_id}" in double.purged, "a job not running is purged"
        assert await after.adopt(request(nomad_spec("meridian/demo:test"))) is None, "an unknown job"
        assert len(double.registered) == 2, "adoption registers nothing"
        assert alloc.proc.pid == pid and not dead(pid), "the same process serves"
        async with aiohttp.ClientSession() as s, s.get(f"http://{address}/info") as r:
            assert (await r.json())["backend_id"] == running.backend_id
        # Watched like one it started: a crash is reported.
        os.kill(pid, signal.SIGKILL)
        assert (await recorder.wait(running.backend_id)).reason is TerminationReason.FAILED


async def test_a_job_nomad_cannot_confirm_at_adoption_is_taken_at_its_journaled_address(
    double: NomadDouble, recorder: Recorder
) -> None:
    """Nomad without a leader while the new edge starts: the backend is not called lost (its key
    would get a second backend); it is adopted at the address the journal holds and confirmed, or
    reported gone, once Nomad answers."""
    before = NomadExecutor(recorder, address=double.url, grace_s=2.0, poll_interval_s=0.02)
    running, gone = (request(nomad_spec("meridian/demo:test")) for _ in range(2))
    address = await before.start(running)
    gone_address = await before.start(gone)
    await before.detach()
    (alloc,) = double.allocs_of(f"meridian-{running.backend_id}")
    (gone_alloc,) = double.allocs_of(f"meridian-{gone.backend_id}")
    assert alloc.proc is not None and gone_alloc.proc is not None
    double.fail_with = 500
    async with nomad_executor(double, recorder, monitor_interval_s=0.05) as after:
        assert await after.adopt(dataclasses.replace(running, last_address=address)) == address
        assert await after.adopt(dataclasses.replace(gone, last_address=gone_address)) == gone_address
        assert await after.adopt(request(nomad_spec("meridian/demo:test"))) is None, "no address: nothing to go on"
        assert after.status(running.backend_id) == "ready"
        os.kill(gone_alloc.proc.pid, signal.SIGKILL)  # ends while Nomad cannot tell anyone
        await wait_gone(gone_alloc.proc.pid)
        double.fail_with = None
        assert (await recorder.wait(gone.backend_id)).reason is TerminationReason.FAILED
        assert f"meridian-{gone.backend_id}" in double.purged
        assert after.status(running.backend_id) == "ready" and len(double.registered) == 2
        os.kill(alloc.proc.pid, signal.SIGKILL)  # confirmed, then watched like one it started
        assert (await recorder.wait(running.backend_id)).reason is TerminationReason.FAILED
