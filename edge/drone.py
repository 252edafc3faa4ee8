"""The edge as its region's drone: runs the backends the control plane assigned to this node,
reports their states, and stops them when asked, when idle, or past their lifetime.

The control plane's word arrives through the replica (`on_changes`); this node's word goes back
as immediate status reports, repeated by every heartbeat until the replica shows it was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from edge.activity import Activity
from edge.control_client import ControlClient
from edge.executors import BackendExit, Executor, ExecutorError, SpawnRequest
from edge.replica import Replica
from sync.errors import MeridianError
from sync.models import BackendStatus, Change, ChangeKind, StatusReport, TemplateSpec, TerminationReason
from sync.state import BackendState

log = logging.getLogger(__name__)


@dataclass
class LocalBackend:
    id: str
    template: TemplateSpec
    status: BackendStatus = BackendStatus.STARTING
    address: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    reason: TerminationReason | None = None
    exit_code: int | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the backend is ready or gone: what a request waiting for it waits on."""

    def report(self) -> StatusReport:
        return StatusReport(
            id=self.id,
            status=self.status,
            address=self.address,
            termination_reason=self.reason,
            exit_code=self.exit_code,
        )


class Drone:
    def __init__(
        self,
        *,
        node_id: str,
        region: str,
        replica: Replica,
        control: ControlClient,
        activity: Activity,
        idle_check_s: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.region = region
        self.replica = replica
        self.control = control
        self.activity = activity
        self.executor: Executor | None = None
        self.local: dict[str, LocalBackend] = {}
        self._idle_check_s = idle_check_s
        self._dirty = asyncio.Event()
        self._reports: asyncio.Queue[StatusReport] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._local_added = asyncio.Event()

    # ---- wiring ---------------------------------------------------------------------------------

    def attach(self, executor: Executor) -> None:
        self.executor = executor

    def on_changes(self, changes: list[Change]) -> None:
        """Replica listener: any backend change may concern this node."""
        if any(c.kind is ChangeKind.BACKEND for c in changes):
            self._dirty.set()

    async def run(self) -> None:
        """Reconcile on every replica change, report states, enforce idle and lifetime limits."""
        self._dirty.set()
        workers = [
            asyncio.create_task(self._reconcile_forever(), name="drone-reconcile"),
            asyncio.create_task(self._report_forever(), name="drone-reports"),
            asyncio.create_task(self._limits_forever(), name="drone-limits"),
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*workers, *self._tasks, return_exceptions=True)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- what the proxy and the local API use ---------------------------------------------------

    async def wait_settled(self, backend_id: str, timeout_s: float) -> LocalBackend | None:
        """The local backend once it is ready or gone; None when it is not (yet) ours or time ran out."""
        local = self.local.get(backend_id)
        if local is not None and local.settled.is_set():  # the common case: no timer, no wait
            return local
        deadline = time.monotonic() + timeout_s
        while True:
            local = self.local.get(backend_id)
            if local is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await local.settled.wait()
                return local if local.settled.is_set() else None
            # Assigned to us but the replica's change has not reached the reconciler yet.
            if time.monotonic() >= deadline:
                return None
            added = self._local_added
            self._dirty.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await added.wait()

    def running(self) -> int:
        return sum(1 for b in self.local.values() if b.status.is_live)

    def reports(self) -> list[StatusReport]:
        return [b.report() for b in self.local.values()]

    # ---- reconcile ------------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile()
            except Exception:
                log.exception("reconcile failed; will retry on the next change")

    async def _reconcile(self) -> None:
        assigned = {b.id: b for b in self.replica.backends_on_node(self.node_id)}
        for backend_id, row in assigned.items():
            status = row.status
            local = self.local.get(backend_id)
            if local is None:
                if status is BackendStatus.SCHEDULED:
                    self._start(row)
                elif status.is_live:
                    # The control plane thinks we run it, but this process never started it
                    # (the edge restarted): it is lost.
                    self._adopt_lost(row)
            elif local.status.is_live and not status.is_live:
                reason = row.termination_reason or TerminationReason.REQUESTED
                self._spawn_task(self.stop(backend_id, reason, hard=status is BackendStatus.TERMINATED))
        for backend_id, local in list(self.local.items()):
            known = assigned.get(backend_id)
            if local.status is BackendStatus.TERMINATED and (known is None or known.is_terminated):
                del self.local[backend_id]  # the control plane has it: nothing left to report
                self.activity.forget(backend_id)

    def _add_local(self, local: LocalBackend) -> None:
        self.local[local.id] = local
        self._local_added.set()
        self._local_added = asyncio.Event()

    def _start(self, row: BackendState) -> None:
        template = self.replica.template(row.template_id)
        if template is None or self.executor is None:
            log.error("backend %s names template %s unknown to this edge", row.id, row.template_id)
            return
        local = LocalBackend(id=row.id, template=template.spec)
        self._add_local(local)
        self._report(local)
        request = SpawnRequest(
            backend_id=row.id,
            key=row.key,
            fencing_token=row.fencing_token,
            region=self.region,
            secret=row.secret,
            template=local.template,
            template_id=row.template_id,
        )
        self._spawn_task(self._run_start(local, request))

    async def _run_start(self, local: LocalBackend, request: SpawnRequest) -> None:
        assert self.executor is not None
        try:
            address = await self.executor.start(request)
        except ExecutorError as exc:
            log.warning("backend %s did not start: %s", local.id, exc)
            if local.status.is_live:  # the executor's exit callback normally got here first
                self._finish(local, TerminationReason.FAILED, getattr(exc, "exit_code", None))
            return
        if local.status is BackendStatus.STARTING:
            local.address = address
            local.status = BackendStatus.READY
            local.started_at = time.monotonic()
            self.activity.touch(local.id)
            local.settled.set()
            self._report(local)

    def _adopt_lost(self, row: BackendState) -> None:
        local = LocalBackend(id=row.id, template=TemplateSpec(executor="process", argv=["lost"]))
        self._add_local(local)
        self._finish(local, TerminationReason.LOST, None)

    async def on_exit(self, exit_: BackendExit) -> None:
        """Executor callback: the backend's process (or job) is gone, whatever the cause."""
        local = self.local.get(exit_.backend_id)
        if local is not None and local.status is not BackendStatus.TERMINATED:
            self._finish(local, local.reason or exit_.reason, exit_.exit_code)

    def _finish(self, local: LocalBackend, reason: TerminationReason, exit_code: int | None) -> None:
        local.status = BackendStatus.TERMINATED
        local.reason = reason
        local.exit_code = exit_code
        local.settled.set()
        self._report(local)
        self._dirty.set()

    async def stop(self, backend_id: str, reason: TerminationReason, *, hard: bool = False) -> None:
        local = self.local.get(backend_id)
        if local is None or not local.status.is_live or self.executor is None:
            return
        local.status = BackendStatus.DRAINING
        local.reason = reason
        self._report(local)
        try:
            await self.executor.stop(backend_id, hard=hard, reason=reason)
        except ExecutorError as exc:
            log.warning("stopping backend %s failed: %s", backend_id, exc)
            self._finish(local, reason, None)

    # ---- reports --------------------------------------------------------------------------------

    def _report(self, local: LocalBackend) -> None:
        self._reports.put_nowait(local.report())

    async def _report_forever(self) -> None:
        """Reports go out one at a time, in order; a failed one is left to the next heartbeat."""
        while True:
            report = await self._reports.get()
            try:
                await self.control.report(report)
            except MeridianError as exc:
                log.debug("status report for %s not delivered (%s); the heartbeat repeats it", report.id, exc)

    # ---- idle and lifetime ----------------------------------------------------------------------

    async def _limits_forever(self) -> None:
        while True:
            await asyncio.sleep(self._idle_check_s)
            now = time.monotonic()
            for local in list(self.local.values()):
                if local.status is not BackendStatus.READY:
                    continue
                lifetime = local.template.lifetime_limit_s
                if lifetime is not None and now - local.started_at >= lifetime:
                    self._spawn_task(self.stop(local.id, TerminationReason.LIFETIME))
                elif self.activity.idle_for(local.id, now) >= local.template.idle_timeout_s:
                    self._spawn_task(self.stop(local.id, TerminationReason.IDLE))
