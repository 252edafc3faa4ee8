"""The ``nomad`` executor: one Nomad job per backend, driven through ``python-nomad``.

python-nomad is synchronous (requests), so every call runs in a worker thread (``asyncio.to_thread``)
and its exceptions are turned into this package's at the boundary:

* connection errors, timeouts and 5xx answers → :class:`ExecutorUnavailable`;
* 400/403 answers → :class:`ExecutorError` (the job or the token is wrong; retrying will not help);
* 404 → "gone" (a purged job or a garbage-collected allocation), handled inside.

The job (see :func:`nomad_job`): ID ``meridian-<backend_id>``, type ``service``, datacenter = the
backend's region, one group with one dynamic port labelled ``http`` and one task — ``docker``
running ``template.image``, or ``raw_exec`` running ``template.argv`` — with the backend's
environment (``PORT`` is ``${NOMAD_PORT_http}``, interpolated by Nomad), ``memory_mb`` / ``cpu_mhz``
as its resources and a ``LogConfig`` capping its stdout/stderr. A ``raw_exec`` backend runs on the
Nomad client's host and must listen on ``$NOMAD_IP_http`` (or all interfaces), not only loopback.
Restarts and rescheduling are disabled: a
backend that dies is *failed* and its key becomes free — Nomad must not bring up a second instance
behind the platform's back (the fencing token would no longer identify one process).

``start`` registers the job, polls the job's allocation until ``ClientStatus`` is ``running``,
reads ``HostIP:Value`` of the ``http`` port from ``AllocatedResources.Shared.Ports``, then runs the
shared HTTP readiness probe while it keeps watching the allocation. Registering the same job again
(an edge that restarted) is idempotent in Nomad, so ``start`` re-attaches to a running job.

``stop`` deregisters the job with ``purge=true``. Nomad stops the task with SIGTERM and its
``KillTimeout`` (set from ``grace_s``) before SIGKILL; there is no "kill now" in the job API, so
``hard=True`` only means ``stop`` does not wait for the allocation to finish. With ``hard=False`` it
waits (bounded) for the allocation to end, to report its exit code.

After ready, the allocation is polled every ``monitor_interval_s``; an allocation that ends on its
own is reported as ``failed`` (``lost`` when Nomad lost its node), with the task's exit code.

Known limits: ``MERIDIAN_SECRET`` travels in the job's ``Env`` (readable by anyone allowed to read
the job; Nomad Variables or Vault would hide it); polling rather than Nomad blocking queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import requests

# python-nomad's client. A nomad/ directory of job specs at the repository root is only a
# namespace-package fallback: the installed package wins at run time (ruff is told it is
# third-party; mypy may see the directory, hence the ignore).
from nomad import Nomad  # type: ignore[attr-defined,unused-ignore]
from nomad.api import exceptions as nomad_exc

from sync.models import TemplateSpec, TerminationReason
from sync.timing import LOG_FOLLOW_POLL_S

from .base import (
    BackendRecord,
    BaseExecutor,
    ExecutorError,
    ExecutorUnavailable,
    ExitCallback,
    SpawnRequest,
    StartFailed,
    backend_env,
    check_backend_id,
    probe_until_end,
)
from .readiness import NotReady, format_address

log = logging.getLogger(__name__)

T = TypeVar("T")

LOG_TYPES = ("stdout", "stderr")
PORT_LABEL = "http"
TASK_NAME = "backend"
TERMINAL = frozenset({"complete", "failed", "lost"})
_NS_PER_S = 1_000_000_000


class _Gone(ExecutorError):
    """Nomad answered 404: the job was purged or the allocation garbage-collected."""


def job_id(backend_id: str) -> str:
    return f"meridian-{backend_id}"


def nomad_job(req: SpawnRequest, *, grace_s: float, log_max_files: int = 2, log_max_file_mb: int = 2) -> dict[str, Any]:
    """The Nomad API job (JSON form, as ``POST /v1/jobs`` takes it under ``"Job"``) for a backend.

    ``image`` runs with the ``docker`` driver (``argv``, when also given, as its command);
    ``argv`` alone runs with ``raw_exec``. Nomad caps and rotates the task's stdout/stderr
    (``LogConfig``).
    """
    tpl = req.template
    resources: dict[str, int] = {}
    if tpl.cpu_mhz is not None:
        resources["CPU"] = tpl.cpu_mhz
    if tpl.memory_mb is not None:
        resources["MemoryMB"] = tpl.memory_mb
    argv = list(tpl.argv or [])
    if tpl.image:
        driver = "docker"
        config: dict[str, Any] = {"image": tpl.image, "ports": [PORT_LABEL]}
        if argv:
            config |= {"command": argv[0], "args": argv[1:]}
    else:
        driver = "raw_exec"
        config = {"command": argv[0], "args": argv[1:]}
    task: dict[str, Any] = {
        "Name": TASK_NAME,
        "Driver": driver,
        "Config": config,
        "Env": backend_env(req, "${NOMAD_PORT_" + PORT_LABEL + "}"),
        "KillTimeout": int(grace_s * _NS_PER_S),
        "LogConfig": {"MaxFiles": log_max_files, "MaxFileSizeMB": log_max_file_mb},
    }
    if resources:
        task["Resources"] = resources
    return {
        "ID": job_id(req.backend_id),
        "Name": job_id(req.backend_id),
        "Type": "service",
        "Datacenters": [req.region],
        "Meta": {
            "meridian_backend_id": req.backend_id,
            "meridian_template_id": req.template_id,
            "meridian_fencing_token": str(req.fencing_token),
        },
        "TaskGroups": [
            {
                "Name": TASK_NAME,
                "Count": 1,
                "Networks": [{"DynamicPorts": [{"Label": PORT_LABEL}]}],
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [task],
            }
        ],
    }


def http_address(alloc: dict[str, Any]) -> tuple[str, int]:
    """``(HostIP, Value)`` of the allocation's ``http`` port."""
    shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == PORT_LABEL and port.get("HostIP") and port.get("Value"):
            return str(port["HostIP"]), int(port["Value"])
    raise StartFailed(f"allocation {alloc.get('ID')} has no {PORT_LABEL!r} port")


def alloc_description(alloc: dict[str, Any]) -> str:
    """Nomad's own words for what happened: the client description and the task's last event."""
    state = (alloc.get("TaskStates") or {}).get(TASK_NAME) or {}
    events = state.get("Events") or []
    last = next((e for e in reversed(events) if e.get("DriverError") or e.get("Type") != "Killing"), None) or {}
    parts = [
        str(alloc.get("ClientDescription") or ""),
        str(last.get("DriverError") or last.get("DisplayMessage") or ""),
    ]
    return "; ".join(p[:300] for p in parts if p) or "no description"


def task_exit_code(alloc: dict[str, Any]) -> int | None:
    """The task's exit code from its last ``Terminated`` event; -N when killed by signal N."""
    state = (alloc.get("TaskStates") or {}).get(TASK_NAME) or {}
    for event in reversed(state.get("Events") or []):
        if event.get("Type") == "Terminated":
            sig = int(event.get("Signal") or 0)
            return -sig if sig else int(event.get("ExitCode") or 0)
    return None


@dataclass(eq=False)
class _Job(BackendRecord):
    job_id: str = ""
    alloc_id: str | None = None


class NomadExecutor(BaseExecutor[_Job]):
    kind = "nomad"

    def __init__(
        self,
        on_exit: ExitCallback,
        *,
        address: str = "http://127.0.0.1:4646",
        token: str | None = None,
        namespace: str | None = None,
        nomad_region: str | None = None,
        verify: bool = True,
        request_timeout_s: int = 5,
        grace_s: float = 5.0,
        poll_interval_s: float = 0.1,
        monitor_interval_s: float = 2.0,
        log_max_files: int = 2,
        log_max_file_mb: int = 2,
        history: int = 4096,
    ) -> None:
        super().__init__(on_exit, history=history)
        self._log_max_files = log_max_files
        self._log_max_file_mb = log_max_file_mb
        self._address = address
        self._client = Nomad(
            address=address,
            token=token,
            namespace=namespace,
            region=nomad_region,
            verify=verify,
            timeout=request_timeout_s,
        )
        self._grace_s = grace_s
        self._poll_s = poll_interval_s
        self._monitor_s = monitor_interval_s
        # A blocking query must return before python-nomad's request timeout gives up on it.
        self._watch_wait_s = max(0.05, min(monitor_interval_s, request_timeout_s - 1.0))

    # ---- interface ---------------------------------------------------------------------------

    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None:
        j = self._live.get(backend_id)
        if j is None or j.reporting:
            return
        previous = j.stop_reason
        if j.stop_reason is None:
            j.stop_reason = reason
        try:
            await self._deregister(j)
        except ExecutorError:
            j.stop_reason = previous  # still running; a later crash is not "stopped"
            raise
        code = None
        if not hard and j.alloc_id is not None:
            code = await self._await_terminal(j.alloc_id, timeout_s=self._grace_s + 5.0)
        await self._report(j, code)
        await j.reported.wait()

    async def adopt(self, req: SpawnRequest) -> str | None:
        """Take over the job of a backend an earlier edge process registered (the job id is made from
        the backend id, so nothing else can be mistaken for it): its address when the job's newest
        allocation runs, watched from now on like one this process started. None when the job is
        gone or not running; such a job is purged, so nothing of it comes up later. Never registers."""
        if self._closed or req.backend_id in self._live:
            return None
        j = self._new_record(req)
        try:
            alloc = await self._current_alloc(j)
        except _Gone:
            return None
        except ExecutorError as exc:
            if req.last_address is None:
                log.error("cannot adopt backend %s: Nomad does not answer (%s)", req.backend_id, exc)
                return None
            # Its job may well run: take the journal's word for the address rather than call it lost
            # (the key would then get a second backend), and confirm once Nomad answers.
            log.warning("adopting backend %s unconfirmed: Nomad does not answer (%s)", req.backend_id, exc)
            self._live[req.backend_id] = j
            self._mark_ready(j, self._confirm_then_watch)
            return req.last_address
        if alloc is None or alloc.get("ClientStatus") != "running":
            await self._purge_quietly(j)
            return None
        try:
            host, port = http_address(alloc)
        except StartFailed:
            await self._purge_quietly(j)
            return None
        self._live[req.backend_id] = j
        self._mark_ready(j, self._watch)
        return format_address(host, port)

    async def read_logs(self, backend_id: str, *, tail: int, follow: bool) -> AsyncIterator[bytes] | None:
        """The task's logs from Nomad (``/v1/client/fs/logs``, plain): the last ``tail`` lines of
        stdout, then of stderr; with ``follow``, what either gains (read every
        :data:`~sync.timing.LOG_FOLLOW_POLL_S`) until the backend ended. Offsets count from the
        oldest log file Nomad still keeps, so a rotation while following may repeat or skip a
        little. None when the allocation is not (or no longer) known."""
        check_backend_id(backend_id)
        j = self._record(backend_id)
        if j is None or j.alloc_id is None:
            return None
        alloc_id = j.alloc_id
        try:
            current = {kind: await self._read_log(alloc_id, kind, 0) for kind in LOG_TYPES}
        except _Gone:
            return None
        offsets = {kind: len(data) for kind, data in current.items()}
        head = b"".join(_last_lines(current[kind], tail) for kind in LOG_TYPES)

        async def stream() -> AsyncIterator[bytes]:
            if head:
                yield head
            while follow:
                running = not j.reporting
                grew = False
                for kind in LOG_TYPES:
                    try:
                        data = await self._read_log(alloc_id, kind, offsets[kind])
                    except _Gone:  # garbage-collected after the purge
                        return
                    if data:
                        offsets[kind] += len(data)
                        grew = True
                        yield data
                if not grew:
                    if not running:
                        return
                    await asyncio.sleep(LOG_FOLLOW_POLL_S)

        return stream()

    async def _read_log(self, alloc_id: str, kind: str, offset: int) -> bytes:
        params = {"task": TASK_NAME, "type": kind, "origin": "start", "offset": str(offset), "plain": "true"}
        resp: requests.Response = await self._call(
            self._client.client.stream_logs.request, alloc_id, params=params, method="get"
        )
        return resp.content

    # ---- phases: register → allocation running → probe (watching the allocation) → watch -----

    def _accepts(self, template: TemplateSpec) -> bool:
        return bool(template.image or template.argv)

    def _new_record(self, req: SpawnRequest) -> _Job:
        return _Job(req=req, job_id=job_id(req.backend_id))

    async def _start(self, j: _Job) -> str:
        deadline = asyncio.get_running_loop().time() + float(j.req.template.start_timeout_s)
        await self._register(j)
        alloc = await self._await_running(j, deadline)
        try:
            host, port = http_address(alloc)
        except StartFailed:
            await self._fail(j, None)
            raise
        return await self._probe(j, host, port, deadline)

    async def _register(self, j: _Job) -> None:
        try:
            job = nomad_job(
                j.req, grace_s=self._grace_s, log_max_files=self._log_max_files, log_max_file_mb=self._log_max_file_mb
            )
            await self._call(self._client.jobs.register_job, {"Job": job})
        except ExecutorError as exc:
            # The request may have reached Nomad even if its answer did not reach us.
            await self._fail(j, None)
            if isinstance(exc, ExecutorUnavailable):
                raise
            raise StartFailed(f"nomad did not accept job {j.job_id}: {exc}") from exc

    async def _await_running(self, j: _Job, deadline: float) -> dict[str, Any]:
        """Poll the job's allocation until it runs; fail on a terminal one, a stop or the deadline."""
        loop = asyncio.get_running_loop()
        timeout_s = float(j.req.template.start_timeout_s)
        last_error: str | None = None
        while True:
            if j.reporting:  # stop() came first
                await self._purge_quietly(j)
                raise StartFailed("stopped while starting")
            if loop.time() >= deadline:
                await self._fail(j, None)
                raise StartFailed(f"allocation not running within {timeout_s:g}s ({last_error})")
            try:
                alloc = await self._current_alloc(j)
            except (ExecutorUnavailable, _Gone) as exc:  # transient while starting: keep trying
                alloc, last_error = None, str(exc)
            if alloc is not None:
                status = alloc.get("ClientStatus")
                last_error = f"allocation {j.alloc_id} is {status}"
                if status in TERMINAL:
                    await self._fail_terminal(j, alloc)
                if status == "running":
                    return alloc
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(j.ended.wait(), min(self._poll_s, max(0.0, deadline - loop.time())))

    async def _probe(self, j: _Job, host: str, port: int, deadline: float) -> str:
        """The readiness probe, while the allocation keeps being watched (and a stop is noticed)."""
        timeout_s = float(j.req.template.start_timeout_s)
        end = asyncio.create_task(self._until_terminal(j, self._poll_s))
        stopped = asyncio.ensure_future(j.ended.wait())
        ended = asyncio.ensure_future(asyncio.wait({end, stopped}, return_when=asyncio.FIRST_COMPLETED))
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            probe_error = await probe_until_end(host, port, j.req.template.ready_path, timeout_s=remaining, end=ended)
        finally:
            for waiter in (end, stopped, ended):
                waiter.cancel()
        if j.reporting:  # stop() came first
            await self._purge_quietly(j)
            raise StartFailed("stopped while starting")
        if end.done() and not end.cancelled():
            alloc = end.result()
            if alloc is None:
                await self._fail(j, None)
                raise StartFailed(f"job {j.job_id} disappeared before it was ready")
            await self._fail_terminal(j, alloc)
        if probe_error is None:
            self._mark_ready(j, self._watch)
            return format_address(host, port)
        await self._fail(j, None)
        if isinstance(probe_error, NotReady):
            raise StartFailed(f"not ready within {timeout_s:g}s ({probe_error.last_error})")
        raise StartFailed(f"readiness probe failed: {probe_error!r}")

    async def _watch(self, j: _Job) -> None:
        """After ready: notice an allocation that ends without the platform asking."""
        alloc = await self._until_terminal(j, self._monitor_s)
        if j.reporting:
            return
        if alloc is None:
            await self._report(j, None, TerminationReason.LOST)
            return
        status = alloc.get("ClientStatus")
        reason = TerminationReason.LOST if status == "lost" else TerminationReason.FAILED
        await self._report(j, task_exit_code(alloc), reason)

    async def _confirm_then_watch(self, j: _Job) -> None:
        """An adoption Nomad could not confirm: ask again until it answers, then watch as usual, or
        report the backend gone (and purge its job) if it no longer runs."""
        while True:
            try:
                alloc = await self._current_alloc(j)
                break
            except _Gone:
                alloc = None
                break
            except ExecutorError:
                await asyncio.sleep(self._monitor_s)
        if alloc is None:
            await self._report(j, None, TerminationReason.LOST)
        elif alloc.get("ClientStatus") != "running":
            await self._purge_quietly(j)
            reason = TerminationReason.LOST if alloc.get("ClientStatus") == "lost" else TerminationReason.FAILED
            await self._report(j, task_exit_code(alloc), reason)
        else:
            await self._watch(j)

    async def _abort(self, j: _Job) -> None:
        await self._fail(j, None)

    # ---- Nomad calls -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one python-nomad call in a thread; translate its exceptions."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except nomad_exc.URLNotFoundNomadException as exc:
            raise _Gone(_describe(exc)) from exc
        except (nomad_exc.BadRequestNomadException, nomad_exc.URLNotAuthorizedNomadException) as exc:
            raise ExecutorError(f"nomad at {self._address} refused the request: {_describe(exc)}") from exc
        except nomad_exc.BaseNomadException as exc:
            # Connection failures arrive wrapped, with the requests exception as nomad_resp; any other
            # answer (5xx: no leader, overloaded) is also "cannot use Nomad right now".
            raise ExecutorUnavailable(f"nomad at {self._address} is unavailable: {_describe(exc)}") from exc
        except requests.RequestException as exc:  # includes TimeoutNomadException
            raise ExecutorUnavailable(f"nomad at {self._address} is unreachable: {exc}") from exc
        except ValueError as exc:  # a body that is not JSON
            raise ExecutorError(f"nomad at {self._address} sent an unreadable answer: {exc}") from exc

    async def _current_alloc(self, j: _Job) -> dict[str, Any] | None:
        """The job's newest allocation, read in full (the list's stubs carry no ports)."""
        if j.alloc_id is None:
            allocs: list[dict[str, Any]] = await self._call(self._client.job.get_allocations, j.job_id)
            mine = [a for a in allocs if a.get("JobID", j.job_id) == j.job_id]
            if not mine:
                return None
            j.alloc_id = str(max(mine, key=lambda a: int(a.get("CreateIndex") or 0))["ID"])
        alloc: dict[str, Any] = await self._call(self._client.allocation.get_allocation, j.alloc_id)
        return alloc

    async def _until_terminal(self, j: _Job, interval_s: float) -> dict[str, Any] | None:
        """Watch the allocation until it is terminal (returned) or gone (None).

        Blocking queries (``?index=`` from the last ``X-Nomad-Index``, ``?wait=``): Nomad answers as
        soon as the allocation changes. ``interval_s`` paces the retries after an error.
        """
        assert j.alloc_id is not None
        complained = False
        index = 0
        while not j.reporting:
            try:
                alloc, index = await self._read_alloc_blocking(j.alloc_id, index)
            except _Gone:
                return None
            except ExecutorError as exc:
                if not complained:
                    log.warning("cannot watch backend %s: %s", j.backend_id, exc)
                    complained = True
                index = 0
                await asyncio.sleep(interval_s)
                continue
            complained = False
            if alloc.get("ClientStatus") in TERMINAL:
                return alloc
        return None

    async def _read_alloc_blocking(self, alloc_id: str, index: int) -> tuple[dict[str, Any], int]:
        params = {"index": str(index), "wait": f"{int(self._watch_wait_s * 1000)}ms"} if index else None
        resp: requests.Response = await self._call(
            self._client.allocation.request, alloc_id, method="get", params=params
        )
        body = resp.json()
        if not isinstance(body, dict):
            raise ExecutorError(f"nomad at {self._address} sent an allocation that is not an object")
        try:
            new_index = int(resp.headers.get("X-Nomad-Index", "0"))
        except ValueError:
            new_index = 0
        # An index that went backwards (a restored cluster) restarts from a plain read.
        return body, new_index if new_index > index else 0

    async def _await_terminal(self, alloc_id: str, *, timeout_s: float) -> int | None:
        """Wait (bounded) for a deregistered job's allocation to end; its exit code if known."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                alloc = await self._call(self._client.allocation.get_allocation, alloc_id)
            except _Gone:
                return None
            except ExecutorError as exc:
                log.warning("cannot confirm that allocation %s ended: %s", alloc_id, exc)
                return None
            if alloc.get("ClientStatus") in TERMINAL:
                return task_exit_code(alloc)
            await asyncio.sleep(self._poll_s)
        log.warning("allocation %s still running %gs after its job was purged", alloc_id, timeout_s)
        return None

    async def _deregister(self, j: _Job) -> None:
        with contextlib.suppress(_Gone):  # already purged: that is what we want
            await self._call(self._client.job.deregister_job, j.job_id, purge=True)

    async def _purge_quietly(self, j: _Job) -> None:
        try:
            await self._deregister(j)
        except ExecutorError as exc:
            log.error("could not purge job %s (it may be left in Nomad): %s", j.job_id, exc)

    async def _fail(self, j: _Job, code: int | None) -> None:
        """Purge the job and report the backend failed (a stop that came first keeps its reason)."""
        await self._purge_quietly(j)
        await self._report(j, code)

    async def _fail_terminal(self, j: _Job, alloc: dict[str, Any]) -> NoReturn:
        code = task_exit_code(alloc)
        await self._fail(j, code)
        if j.stop_reason is not None:
            raise StartFailed("stopped while starting", code)
        raise StartFailed(
            f"allocation {alloc.get('ClientStatus')} before it was ready: {alloc_description(alloc)}", code
        )


def _last_lines(data: bytes, lines: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""


def _describe(exc: nomad_exc.BaseNomadException) -> str:
    resp = getattr(exc, "nomad_resp", None)
    if isinstance(resp, requests.Response):
        return f"HTTP {resp.status_code}: {resp.text.strip()[:500]}"
    return str(resp if resp is not None else exc)
