"""A test double of the Nomad HTTP API — a double because there is no Nomad binary (nor Docker) on
these machines: the tests run against this, never against a real Nomad.

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

Where the real API is strict, so is the double: a register body without the ``Job`` wrapper, a
field Nomad's structs do not have (at any level of the job), or a value of the wrong JSON type is
refused with 400 and a message in Nomad's style. (Nomad's decoder would at best ignore a misspelt
field, so the job would silently run without it; refusing it here catches such a bug in a test.)
``raw_exec`` tasks run their ``command`` and ``args``; ``docker`` tasks their image's argv.

Blocking queries are modelled as documented: every answer carries ``X-Nomad-Index``; a ``GET`` with
``?index=N`` waits (up to ``?wait=``, default 5 minutes in Nomad, 5 s here) until the object's index
passes N. Faults are switches: ``fail_with`` (every call answers that status), ``refuse_register``
(a status and message for ``POST /v1/jobs``: 403 for a token without ``submit-job``, 400 for a job
Nomad rejects), :meth:`lose` (the node of an allocation is lost).

``GET /v1/client/fs/logs/:alloc_id`` serves a task's stdout/stderr (plain, not following).

What it does not model: scheduling across nodes, evaluations, deployments, restarts, ACL tokens.
An allocation stays ``pending`` until it has been read once while pending, so a client always gets
to see that state (deterministically, without timing).
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
    lost: bool = False


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
        self.refuse_register: tuple[int, str] | None = None  # (status, message) for POST /v1/jobs
        self.failed_a_request = asyncio.Event()  # set whenever fail_with answered a call
        self._index = 1000
        self._changed = asyncio.Condition()
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
        app.router.add_get("/v1/client/fs/logs/{id}", self._logs)
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

    def lose(self, alloc: Alloc) -> None:
        """The allocation's node stopped answering: Nomad marks it ``lost`` (its process, on the
        unreachable node, is killed here so nothing outlives the test)."""
        self._signal(alloc, signal.SIGKILL)
        alloc.lost = True
        self._finish(alloc, "lost")

    # ---- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if self.fail_with is not None:
            self.failed_a_request.set()
            return web.Response(status=self.fail_with, text="No cluster leader")
        resp: web.StreamResponse = await handler(request)
        resp.headers.setdefault("X-Nomad-Index", str(self._index))
        resp.headers["X-Nomad-KnownLeader"] = "true"
        resp.headers["X-Nomad-LastContact"] = "0"
        return resp

    def _log_file(self, alloc: Alloc, kind: str) -> Path:
        return self.log_dir / f"{alloc.id}.{alloc.task}.{kind}.0"

    async def _logs(self, request: web.Request) -> web.Response:
        """``GET /v1/client/fs/logs/:alloc_id`` in its plain, non-following form (what the edge
        uses); following and the framed JSON encoding are not modelled (400)."""
        alloc = self.allocs.get(request.match_info["id"])
        if alloc is None:
            return web.Response(status=404, text="unknown allocation")
        q = request.query
        if q.get("task") != alloc.task:
            return web.Response(status=400, text="must include task name")
        if q.get("type") not in ("stdout", "stderr"):
            return web.Response(status=400, text="must include a valid log type (stdout or stderr)")
        if q.get("plain") != "true" or q.get("follow", "false") == "true":
            return web.Response(status=400, text="this double serves plain, non-following logs only")
        origin, raw_offset = q.get("origin", "start"), q.get("offset", "0")
        if origin not in ("start", "end") or not raw_offset.isdigit():
            return web.Response(status=400, text="invalid origin or offset")
        try:
            data = await asyncio.to_thread(self._log_file(alloc, q["type"]).read_bytes)
        except FileNotFoundError:
            data = b""
        offset = int(raw_offset)
        data = data[offset:] if origin == "start" else data[max(0, len(data) - offset) :]
        return web.Response(body=data, content_type="text/plain")

    def _next_index(self) -> int:
        self._index += 1
        asyncio.get_running_loop().create_task(self._notify())
        return self._index

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _block(self, request: web.Request, current: Any) -> web.Response | None:
        """A blocking query: wait while the object's index is not past ``?index=``; 400 on junk."""
        raw_index, raw_wait = request.query.get("index"), request.query.get("wait", "5s")
        if raw_index is None:
            return None
        wait = re.fullmatch(r"(\d+)(ms|s|m)", raw_wait)
        if not raw_index.isdigit() or wait is None:
            return web.Response(status=400, text="Invalid index or wait")
        wait_s = min(int(wait.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[wait.group(2)], 300)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s), self._changed:
                await self._changed.wait_for(lambda: current() > int(raw_index))
        return None

    async def _register(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="failed to parse body")
        if not isinstance(body, dict):
            return web.Response(status=400, text="failed to parse body: not an object")
        job = body.get("Job")
        if not isinstance(job, dict):
            return web.Response(status=400, text="Job must be specified")
        problem = _unknown_or_mistyped(body, REGISTER_REQUEST, "") or _validate(job)
        if problem:
            return web.Response(status=400, text=f"1 error occurred:\n\t* {problem}")
        if self.refuse_register is not None:
            status, message = self.refuse_register
            return web.Response(status=status, text=message)
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
        refused = await self._block(request, lambda: max((a.modify_index for a in self.allocs_of(job_id)), default=0))
        if refused is not None:
            return refused
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
        index = max((a.modify_index for a in self.allocs_of(job_id)), default=self._index)
        return web.json_response(stubs, headers={"X-Nomad-Index": str(index)})

    async def _get_alloc(self, request: web.Request) -> web.Response:
        alloc = self.allocs.get(request.match_info["id"])
        if alloc is None:
            return web.Response(status=404, text="alloc not found")
        refused = await self._block(request, lambda: alloc.modify_index)
        if refused is not None:
            return refused
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
            headers={"X-Nomad-Index": str(alloc.modify_index)},
            data={
                "ID": alloc.id,
                "Name": f"{alloc.job_id}.{alloc.group}[0]",
                "NodeID": "double-node",
                "JobID": alloc.job_id,
                "TaskGroup": alloc.group,
                "DesiredStatus": alloc.desired_status,
                "ClientStatus": status,
                "ClientDescription": _DESCRIPTIONS.get(status, ""),
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
            },
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
        config = task.get("Config") or {}
        if task["Driver"] == "raw_exec":
            argv: list[str] | None = [str(config.get("command", "")), *map(str, config.get("args") or [])]
        else:
            argv = self.images.get(config.get("image", ""))
        if argv is None or task["Driver"] not in ("docker", "raw_exec"):
            message = "Failed to pull image: manifest unknown" if argv is None else "missing driver"
            alloc.events.append({**_event("Driver Failure", message), "DriverError": message})
            self._finish(alloc, "failed")
            return
        argv = [_INTERPOLATE.sub(lambda m: str(alloc.ports.get(m.group(1), "")), a) for a in argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
        for key, value in (task.get("Env") or {}).items():
            env[key] = _INTERPOLATE.sub(lambda m: str(alloc.ports.get(m.group(1), "")), value)
        env.update({"NOMAD_ALLOC_ID": alloc.id, "NOMAD_JOB_ID": alloc.job_id, "NOMAD_TASK_NAME": alloc.task})
        out = await asyncio.to_thread(_open_log, self._log_file(alloc, "stdout"))
        err = await asyncio.to_thread(_open_log, self._log_file(alloc, "stderr"))
        try:
            alloc.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True
            )
        except OSError as exc:
            message = f"failed to launch command with executor: {exc}"
            alloc.events.append({**_event("Driver Failure", message), "DriverError": message})
            self._finish(alloc, "failed")
            return
        finally:
            out.close()
            err.close()
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
        if alloc.lost:
            return
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


_DESCRIPTIONS = {
    "pending": "No tasks have started",
    "running": "Tasks are running",
    "complete": "All tasks have completed",
    "failed": "Failed tasks",
    "lost": "alloc is lost since its node is down",
}


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


def _event(kind: str, message: str) -> dict[str, Any]:
    return {"Type": kind, "Time": time.time_ns(), "DisplayMessage": message, "ExitCode": 0, "Signal": 0}


# The fields of Nomad's API structs (api/jobs.go, api/tasks.go, api/resources.go) the double knows;
# a type is str/int/bool, "map" (string → string), [type] (a list), or a nested dict.
_PORT: dict[str, Any] = {"Label": str, "Value": int, "To": int, "HostNetwork": str}
_NETWORK: dict[str, Any] = {
    "Mode": str,
    "Device": str,
    "CIDR": str,
    "IP": str,
    "MBits": int,
    "Hostname": str,
    "DynamicPorts": [_PORT],
    "ReservedPorts": [_PORT],
}
_TASK: dict[str, Any] = {
    "Name": str,
    "Driver": str,
    "User": str,
    "Leader": bool,
    "KillSignal": str,
    "KillTimeout": int,
    "ShutdownDelay": int,
    "Config": "any",
    "Env": "map",
    "Meta": "map",
    "Resources": {"CPU": int, "Cores": int, "MemoryMB": int, "MemoryMaxMB": int, "DiskMB": int, "Networks": [_NETWORK]},
    "LogConfig": {"MaxFiles": int, "MaxFileSizeMB": int, "Disabled": bool},
    "Constraints": ["any"],
    "Affinities": ["any"],
    "Services": ["any"],
    "Templates": ["any"],
    "Artifacts": ["any"],
}
_GROUP: dict[str, Any] = {
    "Name": str,
    "Count": int,
    "Meta": "map",
    "Networks": [_NETWORK],
    "Tasks": [_TASK],
    "RestartPolicy": {"Attempts": int, "Interval": int, "Delay": int, "Mode": str, "RenderTemplates": bool},
    "ReschedulePolicy": {
        "Attempts": int,
        "Interval": int,
        "Delay": int,
        "DelayFunction": str,
        "MaxDelay": int,
        "Unlimited": bool,
    },
    "Constraints": ["any"],
    "Affinities": ["any"],
    "Spreads": ["any"],
    "Services": ["any"],
    "Volumes": "any",
    "EphemeralDisk": "any",
    "Update": "any",
    "Migrate": "any",
    "ShutdownDelay": int,
}
_JOB: dict[str, Any] = {
    "ID": str,
    "Name": str,
    "Namespace": str,
    "Region": str,
    "Type": str,
    "Priority": int,
    "AllAtOnce": bool,
    "Datacenters": [str],
    "NodePool": str,
    "Meta": "map",
    "TaskGroups": [_GROUP],
    "Constraints": ["any"],
    "Affinities": ["any"],
    "Spreads": ["any"],
    "Update": "any",
    "Periodic": "any",
    "ParameterizedJob": "any",
}
REGISTER_REQUEST: dict[str, Any] = {
    "Job": _JOB,
    "EnforceIndex": bool,
    "JobModifyIndex": int,
    "PolicyOverride": bool,
    "PreserveCounts": bool,
    "EvalPriority": int,
    "Namespace": str,
    "Region": str,
    "SecretID": str,
}


def _unknown_or_mistyped(value: Any, schema: Any, where: str) -> str | None:
    """Nomad-style message for the first field the API structs do not have or cannot decode."""
    if schema == "any":
        return None
    if schema == "map":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return (
            None
            if ok
            else f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type map[string]string"
        )
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type []"
        for i, item in enumerate(value):
            problem = _unknown_or_mistyped(item, schema[0], f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type object"
        for key, item in value.items():
            if key not in schema:
                return f"json: unknown field {key!r} in {where or 'request'}"
            problem = _unknown_or_mistyped(item, schema[key], f"{where}.{key}".lstrip("."))
            if problem:
                return problem
        return None
    if item_ok(value, schema):
        return None
    return f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type {schema.__name__}"


def item_ok(value: Any, kind: type) -> bool:
    if value is None:
        return True  # JSON null decodes to Go's zero value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool", type(None): "null"}.get(type(value), "number")


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
