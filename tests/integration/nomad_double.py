"""A test double of the Nomad HTTP API — a double because no Nomad binary is available here.

It is a small aiohttp server on 127.0.0.1 that answers, in the shapes Nomad documents, the calls the
Nomad executor makes: ``POST /v1/jobs`` (register, body ``{"Job": {...}}``), ``GET /v1/job/:id``,
``GET /v1/job/:id/allocations``, ``GET /v1/allocation/:id`` (with ``ClientStatus`` going
``pending`` → ``running`` → ``complete``/``failed``, ``AllocatedResources.Shared.Ports`` and the task's
``TaskStates`` events), and ``DELETE /v1/job/:id?purge=true``.

There is no Docker daemon either, so the "docker" driver is replaced by a mapping from image name to
a local argv given to the double: each allocation really runs that process, with the job's ``Env``
(``${NOMAD_PORT_<label>}`` interpolated) and on the port the double allocated. The executor's
readiness probe therefore talks to a real server, and a killed task really exits. Unknown images
fail the allocation the way a failed image pull would ("Driver Failure").

What it does not model: scheduling across nodes, evaluations, deployments, restarts, blocking
queries, ACLs. An allocation stays ``pending`` until it has been read once while pending, so a
client always gets to see that state (deterministically, without timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from sync.net import free_port

_INTERPOLATE = re.compile(r"\$\{NOMAD_PORT_([A-Za-z0-9_]+)\}")


@dataclass(eq=False)
class Alloc:
    id: str
    job_id: str
    group: str
    task: str
    ports: dict[str, int]
    to: dict[str, int]
    create_index: int
    modify_index: int
    client_status: str = "pending"
    desired_status: str = "run"
    events: list[dict[str, Any]] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    read_while_pending: asyncio.Event = field(default_factory=asyncio.Event)
    statuses_served: list[str] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None


class NomadDouble:
    def __init__(self, images: dict[str, list[str]], *, log_dir: Path, host_ip: str = "127.0.0.1") -> None:
        self.images = images
        self.host_ip = host_ip
        self.log_dir = log_dir
        self.jobs: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, Alloc] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.registered: list[dict[str, Any]] = []  # every job body received, in order
        self.purged: list[str] = []
        self.fail_with: int | None = None  # answer every call with this status (e.g. 500)
        self._index = 1000
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v1/jobs", self._register)
        app.router.add_get("/v1/job/{id}", self._get_job)
        app.router.add_get("/v1/job/{id}/allocations", self._job_allocations)
        app.router.add_delete("/v1/job/{id}", self._deregister)
        app.router.add_get("/v1/allocation/{id}", self._get_alloc)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        for alloc in self.allocs.values():
            alloc.desired_status = "stop"
            alloc.read_while_pending.set()
            self._signal(alloc, signal.SIGKILL)
        for alloc in self.allocs.values():
            if alloc.runner is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await alloc.runner
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- helpers for tests -------------------------------------------------------------------

    def allocs_of(self, job_id: str) -> list[Alloc]:
        return [a for a in self.allocs.values() if a.job_id == job_id]

    # ---- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text="No cluster leader")
        resp: web.StreamResponse = await handler(request)
        resp.headers["X-Nomad-Index"] = str(self._index)
        resp.headers["X-Nomad-KnownLeader"] = "true"
        return resp

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    async def _register(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="failed to parse body")
        job = body.get("Job") if isinstance(body, dict) else None
        if not isinstance(job, dict):
            return web.Response(status=400, text="Job must be specified")
        problem = _validate(job)
        if problem:
            return web.Response(status=400, text=f"1 error occurred:\n\t* {problem}")
        self.registered.append(job)
        index = self._next_index()
        job_id = job["ID"]
        unchanged = self.jobs.get(job_id, {}).get("_spec") == job
        self.jobs[job_id] = {**job, "_spec": job, "Status": "running", "ModifyIndex": index}
        if not unchanged or not any(a.desired_status == "run" for a in self.allocs_of(job_id)):
            self._place(job, index)
        return web.json_response(
            {
                "EvalID": str(uuid.uuid4()),
                "EvalCreateIndex": index,
                "JobModifyIndex": index,
                "Warnings": "",
                "Index": index,
                "LastContact": 0,
                "KnownLeader": True,
            }
        )

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.Response(status=404, text="job not found")
        return web.json_response({k: v for k, v in job.items() if k != "_spec"})

    async def _job_allocations(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        stubs = [
            {
                "ID": a.id,
                "EvalID": str(uuid.uuid4()),
                "Name": f"{a.job_id}.{a.group}[0]",
                "NodeID": "double-node",
                "JobID": a.job_id,
                "TaskGroup": a.group,
                "DesiredStatus": a.desired_status,
                "ClientStatus": a.client_status,
                "CreateIndex": a.create_index,
                "ModifyIndex": a.modify_index,
            }
            for a in self.allocs_of(job_id)
        ]
        return web.json_response(stubs)

    async def _get_alloc(self, request: web.Request) -> web.Response:
        alloc = self.allocs.get(request.match_info["id"])
        if alloc is None:
            return web.Response(status=404, text="alloc not found")
        status = alloc.client_status
        alloc.statuses_served.append(status)
        if status == "pending":
            alloc.read_while_pending.set()
        # "To" is the port inside the task's network namespace; 0 when the job did not map one.
        ports = [
            {"Label": label, "Value": port, "To": alloc.to.get(label, 0), "HostIP": self.host_ip}
            for label, port in alloc.ports.items()
        ]
        failed = status == "failed"
        return web.json_response(
            {
                "ID": alloc.id,
                "Name": f"{alloc.job_id}.{alloc.group}[0]",
                "NodeID": "double-node",
                "JobID": alloc.job_id,
                "TaskGroup": alloc.group,
                "DesiredStatus": alloc.desired_status,
                "ClientStatus": status,
                "CreateIndex": alloc.create_index,
                "ModifyIndex": alloc.modify_index,
                "AllocatedResources": {
                    "Shared": {
                        "Ports": ports,
                        "Networks": [{"IP": self.host_ip, "DynamicPorts": ports, "Mode": "host"}],
                    },
                    "Tasks": {alloc.task: {}},
                },
                "TaskStates": {
                    alloc.task: {
                        "State": {"pending": "pending", "running": "running"}.get(status, "dead"),
                        "Failed": failed,
                        "Events": alloc.events,
                    }
                },
            }
        )

    async def _deregister(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None:
            return web.Response(status=404, text="job not found")
        index = self._next_index()
        kill_timeout_s = job["TaskGroups"][0]["Tasks"][0].get("KillTimeout", 5_000_000_000) / 1e9
        for alloc in self.allocs_of(job_id):
            if alloc.desired_status == "run":
                alloc.desired_status = "stop"
                alloc.modify_index = index
                asyncio.get_running_loop().create_task(self._kill(alloc, kill_timeout_s))
        if request.query.get("purge", "").lower() == "true":
            del self.jobs[job_id]
            self.purged.append(job_id)
        else:
            job["Status"] = "dead"
            job["Stop"] = True
        return web.json_response({"EvalID": str(uuid.uuid4()), "EvalCreateIndex": index, "JobModifyIndex": index})

    # ---- the "client": allocations running local processes -----------------------------------

    def _place(self, job: dict[str, Any], index: int) -> None:
        group = job["TaskGroups"][0]
        task = group["Tasks"][0]
        dynamic = [p for n in group.get("Networks") or [] for p in n.get("DynamicPorts") or []]
        alloc = Alloc(
            id=str(uuid.uuid4()),
            job_id=job["ID"],
            group=group["Name"],
            task=task["Name"],
            ports={p["Label"]: free_port() for p in dynamic},
            to={p["Label"]: int(p["To"]) for p in dynamic if p.get("To")},
            create_index=index,
            modify_index=index,
        )
        alloc.events.append(_event("Received", "Task received by client"))
        self.allocs[alloc.id] = alloc
        alloc.runner = asyncio.get_running_loop().create_task(self._run(alloc, task))

    async def _run(self, alloc: Alloc, task: dict[str, Any]) -> None:
        await alloc.read_while_pending.wait()
        if alloc.desired_status != "run":
            self._finish(alloc, "complete")
            return
        argv = self.images.get(task.get("Config", {}).get("image", ""))
        if argv is None:
            alloc.events.append(_event("Driver Failure", "Failed to pull image: manifest unknown"))
            self._finish(alloc, "failed")
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
        for key, value in (task.get("Env") or {}).items():
            env[key] = _INTERPOLATE.sub(lambda m: str(alloc.ports.get(m.group(1), "")), value)
        env.update({"NOMAD_ALLOC_ID": alloc.id, "NOMAD_JOB_ID": alloc.job_id, "NOMAD_TASK_NAME": alloc.task})
        out = await asyncio.to_thread(_open_log, self.log_dir / f"{alloc.id}.log")
        try:
            alloc.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True
            )
        finally:
            out.close()
        if alloc.desired_status != "run":  # stopped while we were starting it
            self._signal(alloc, signal.SIGKILL)
        alloc.events.append(_event("Started", "Task started by client"))
        alloc.client_status = "running"
        alloc.modify_index = self._next_index()
        code = await alloc.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(alloc.proc.pid, signal.SIGKILL)
        sig = -code if code < 0 else 0
        alloc.events.append(
            {**_event("Terminated", f"Exit Code: {max(code, 0)}"), "ExitCode": max(code, 0), "Signal": sig}
        )
        stopped = alloc.desired_status != "run"
        self._finish(alloc, "complete" if stopped or code == 0 else "failed")

    def _finish(self, alloc: Alloc, status: str) -> None:
        alloc.client_status = status
        alloc.modify_index = self._next_index()

    async def _kill(self, alloc: Alloc, kill_timeout_s: float) -> None:
        alloc.read_while_pending.set()  # a pending alloc that is stopped just completes
        if alloc.proc is None:
            return
        alloc.events.append(_event("Killing", "Sent interrupt"))
        self._signal(alloc, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(alloc.proc.wait()), kill_timeout_s)
        except TimeoutError:
            self._signal(alloc, signal.SIGKILL)

    @staticmethod
    def _signal(alloc: Alloc, sig: signal.Signals) -> None:
        if alloc.proc is not None and alloc.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(alloc.proc.pid, sig)


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


def _event(kind: str, message: str) -> dict[str, Any]:
    return {"Type": kind, "Time": time.time_ns(), "DisplayMessage": message, "ExitCode": 0, "Signal": 0}


def _validate(job: dict[str, Any]) -> str | None:
    if not job.get("ID"):
        return "Missing job ID"
    if job.get("Type", "service") not in ("service", "batch", "system", "sysbatch"):
        return f"Invalid job type: {job.get('Type')!r}"
    if not job.get("Datacenters"):
        return "Missing job datacenters"
    groups = job.get("TaskGroups") or []
    if not groups:
        return "Missing job task groups"
    for group in groups:
        if not group.get("Name") or not group.get("Tasks"):
            return "Task group must have a name and at least one task"
        for task in group["Tasks"]:
            if not task.get("Name") or not task.get("Driver"):
                return "Task must have a name and a driver"
    if len(groups) != 1 or len(groups[0]["Tasks"]) != 1:
        return "this double runs one group with one task"
    return None
