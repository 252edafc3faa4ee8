"""The edge as its region's drone: runs the backends the control plane assigned to this node,
reports their states, and stops them when asked, when idle, or past their lifetime.

The control plane's word arrives through the replica (`on_changes`); this node's word goes back
as immediate status reports, repeated by every heartbeat until the replica shows it was taken.

The drone is also the edge's own truth about the backends it runs (`local`): the proxy and the
local connect answer from it (ready, address, stopped) without waiting for the replica, and it
journals every backend it starts and every status change (edge/journal.py), so an edge restarted
after a crash adopts the processes it was running (`restore`) instead of losing or duplicating them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from edge.activity import Activity
from edge.control_client import ControlClient
from edge.executors import BackendExit, Executor, ExecutorError, PoolTag, SpawnRequest
from edge.journal import Journal, JournaledBackend
from edge.replica import Replica
from edge.warm_pool import ClaimTimes, WarmPool
from sync.errors import MeridianError
from sync.models import BackendStatus, Change, ChangeKind, StatusReport, TemplateSpec, TerminationReason
from sync.state import BackendState

log = logging.getLogger(__name__)


StopListener = Callable[[str, TerminationReason], None]
StatusListener = Callable[[StatusReport], None]


@dataclass
class LocalBackend:
    id: str
    template: TemplateSpec
    state: BackendState | None = None
    """The backend's record as this node started it (what an offline spawn is known by)."""
    status: BackendStatus = BackendStatus.STARTING
    address: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    reason: TerminationReason | None = None
    exit_code: int | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the backend is ready or gone: what a request waiting for it waits on."""
    pool_member: str | None = None
    """The warm-pool member it claimed (None: started cold)."""

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
        journal: Journal | None = None,
        online: Callable[[], bool] = lambda: True,
        pool: WarmPool | None = None,
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
        self.journal = journal
        self._online = online
        self._stop_listeners: list[StopListener] = []
        self._status_listeners: list[StatusListener] = []
        self.pool = pool
        self.timing: Callable[[str, float, dict[str, str]], None] = lambda _name, _s, _attrs: None
        """Where the steps of a new backend's start are told (step, seconds, attributes): telemetry
        (edge/telemetry.py), read by bench/cold_start.py. Steps: `assign` (connect's commit →
        this node saw the assignment), `claim` (the claim calls), `ready` (assignment → ready)."""

    # ---- wiring ---------------------------------------------------------------------------------

    def attach(self, executor: Executor) -> None:
        self.executor = executor
        if self.pool is not None:
            self.pool.attach(executor)

    def add_stop_listener(self, listener: StopListener) -> None:
        """Called with (backend id, reason) just before a backend is stopped, e.g. so the proxy closes
        its WebSockets with the reason (`superseded`) before the process goes."""
        self._stop_listeners.append(listener)

    def add_status_listener(self, listener: StatusListener) -> Callable[[], None]:
        """Called with every status change of a backend this node runs, as it happens (before any
        report reaches the control plane): what the browsers' status stream follows while the
        replica does not know the backend yet (an offline spawn). Returns its removal."""
        self._status_listeners.append(listener)
        return lambda: self._status_listeners.remove(listener)

    def on_changes(self, changes: list[Change]) -> None:
        """Replica listener: any backend change may concern this node."""
        if any(c.kind is ChangeKind.BACKEND for c in changes):
            self._dirty.set()
        if self.pool is not None and any(c.kind in (ChangeKind.TEMPLATE, ChangeKind.TEMPLATE_NAME) for c in changes):
            self.pool.wake()

    async def run(self) -> None:
        """Reconcile on every replica change, report states, enforce idle and lifetime limits."""
        self._dirty.set()
        workers = [
            asyncio.create_task(self._reconcile_forever(), name="drone-reconcile"),
            asyncio.create_task(self._report_forever(), name="drone-reports"),
            asyncio.create_task(self._limits_forever(), name="drone-limits"),
        ]
        if self.pool is not None:
            workers.append(asyncio.create_task(self.pool.run(), name="warm-pool"))
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

    def known_backend(self, backend_id: str) -> BackendState | None:
        """The backend as the edge knows it: the replica's record (the control plane's word wins for
        a terminated backend), else this node's own record of a backend it started offline."""
        replicated = self.replica.backend(backend_id)
        if replicated is not None:
            return replicated
        local = self.local.get(backend_id)
        return local.state if local is not None else None

    def live_for_key(self, key: str) -> LocalBackend | None:
        """A live backend of `key` that this node runs (the replica may not know it yet)."""
        for local in self.local.values():
            if local.state is not None and local.state.key == key and local.status.is_live:
                replicated = self.replica.backend(local.id)
                if replicated is None or replicated.is_live:
                    return local
        return None

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
                if reason is TerminationReason.LOST:
                    # Declared lost while this node was cut off, yet still running: the key may
                    # have gone elsewhere, so this one yields at once.
                    reason = TerminationReason.SUPERSEDED
                self._spawn_task(self.stop(backend_id, reason, hard=status is BackendStatus.TERMINATED))
        for backend_id, local in list(self.local.items()):
            known = assigned.get(backend_id)
            if local.status is BackendStatus.TERMINATED and (known is None or known.is_terminated):
                del self.local[backend_id]  # the control plane has it: nothing left to report
                self.activity.forget(backend_id)

    def assigned(self, body: object) -> None:
        """The fast route: the control plane's answer to a connect this edge forwarded carries the
        new backend's record; if it was placed on this node, start it (claim a warm-pool member) now
        rather than when the change feed brings the same record (the reconciler then finds it
        started). Anything else is ignored: the feed remains the authority."""
        try:
            row = BackendState.model_validate(body)
        except ValidationError:
            log.warning("connect answer carried an assignment that is not a backend record; ignored")
            return
        if row.node_id == self.node_id and row.id not in self.local and row.status is BackendStatus.SCHEDULED:
            self._start(row)

    def _add_local(self, local: LocalBackend) -> None:
        self.local[local.id] = local
        self._local_added.set()
        self._local_added = asyncio.Event()

    def _start(self, row: BackendState) -> None:
        template = self.replica.template(row.template_id)
        if template is None or self.executor is None:
            log.error("backend %s names template %s unknown to this edge", row.id, row.template_id)
            return
        local = LocalBackend(id=row.id, template=template.spec, state=row)
        self.timing("assign", max(0.0, time.time() - row.created_at.timestamp()), {})
        self._add_local(local)
        self._journal_backend(row, template.spec, replay=False)
        self._report(local)
        self._spawn_task(self._run_start(local, self._spawn_request(row, template.spec)))

    async def start_offline(self, row: BackendState, spec: TemplateSpec) -> LocalBackend:
        """Start a backend the control plane does not know yet (an offline spawn): journaled, and
        on disk, before this returns."""
        if self.executor is None:
            raise ExecutorError("no executor")
        if self.journal is not None:
            await self.journal.record_backend(row, spec, replay=True)
        local = LocalBackend(id=row.id, template=spec, state=row)
        self._add_local(local)
        self._report(local)
        self._spawn_task(self._run_start(local, self._spawn_request(row, spec)))
        return local

    def _spawn_request(self, row: BackendState, spec: TemplateSpec) -> SpawnRequest:
        return SpawnRequest(
            backend_id=row.id,
            key=row.key,
            fencing_token=row.fencing_token,
            region=self.region,
            secret=row.secret,
            template=spec,
            template_id=row.template_id,
            traceparent=row.traceparent,
        )

    def _journal_backend(self, row: BackendState, spec: TemplateSpec, *, replay: bool) -> None:
        if self.journal is not None:
            self._spawn_task(self.journal.record_backend(row, spec, replay=replay))

    async def _run_start(self, local: LocalBackend, request: SpawnRequest) -> None:
        assert self.executor is not None
        if await self._claim(local, request):
            return
        if self.pool is not None:
            self.pool.make_room()
        try:
            address = await self.executor.start(request)
        except ExecutorError as exc:
            log.warning("backend %s did not start: %s", local.id, exc)
            if local.status.is_live:  # the executor's exit callback normally got here first
                self._finish(local, TerminationReason.FAILED, getattr(exc, "exit_code", None))
            return
        if local.status is BackendStatus.STARTING:
            self._ready(local, address)
            if self.journal is not None:
                pid = getattr(self.executor, "pid", lambda _: None)(local.id)
                self._spawn_task(self.journal.record_process(local.id, pid, address))

    async def _claim(self, local: LocalBackend, request: SpawnRequest) -> bool:
        """A new backend of a pooled template takes a ready warm-pool member, if one takes the claim."""
        pool = self.pool
        if pool is None or not local.template.warm_pool or request.pool is not None:
            return False
        times = ClaimTimes()
        user = local.state.user_id if local.state is not None else None
        while (member := pool.take(request.template_id)) is not None:
            if not await pool.claim(member, request, user, times):
                continue
            assert member.address is not None
            local.pool_member = member.id
            self.timing("claim", times.post_s, {"outcome": "claimed"})
            if local.status is not BackendStatus.STARTING:  # stopped while the claim was on its way
                await self.executor_stop(local.id, local.reason or TerminationReason.REQUESTED)
                return True
            self._ready(local, member.address)
            local.started_at = member.started_at  # lifetime counts from the process's start
            if self.journal is not None:
                pid = getattr(self.executor, "pid", lambda _: None)(local.id)
                self._spawn_task(self.journal.record_process(local.id, pid, member.address, pool_member=member.id))
            return True
        if times.members_tried:
            self.timing("claim", times.post_s, {"outcome": "refused"})
        return False

    async def executor_stop(self, backend_id: str, reason: TerminationReason) -> None:
        assert self.executor is not None
        try:
            await self.executor.stop(backend_id, hard=True, reason=reason)
        except ExecutorError as exc:
            log.warning("stopping backend %s failed: %s", backend_id, exc)

    def _ready(self, local: LocalBackend, address: str) -> None:
        pooled = "true" if local.pool_member is not None else "false"
        self.timing("ready", time.monotonic() - local.started_at, {"pooled": pooled})
        local.address = address
        local.status = BackendStatus.READY
        local.started_at = time.monotonic()
        self.activity.touch(local.id)
        local.settled.set()
        self._report(local)

    # ---- restart: adopt what the journal says this node was running ---------------------------

    async def restore(self) -> None:
        """Before anything else after a (re)start: take over the backends the journal says this node
        runs whose processes still live; report the others gone (`lost`). Never starts a process."""
        if self.journal is None:
            return
        adopt = getattr(self.executor, "adopt", None)
        for known in self.journal.backends():
            if known.ended or known.backend.id in self.local:
                continue
            request = self._spawn_request(known.backend, known.spec)
            if known.pool_member is not None:
                request = replace(request, pool=PoolTag(known.pool_member, self.node_id))
            request = replace(request, last_address=known.address)
            address = await adopt(request) if adopt else None
            self._restored(known, address)
        # Unclaimed warm-pool members of the crashed process are in no journal: stop them (the
        # pool starts new ones) rather than leave them running unseen or take them for backends.
        kill_orphans = getattr(self.executor, "kill_pool_orphans", None)
        if kill_orphans is not None:
            await kill_orphans(self.node_id)

    def _restored(self, known: JournaledBackend, address: str | None) -> None:
        local = LocalBackend(id=known.backend.id, template=known.spec, state=known.backend)
        self._add_local(local)
        if address is None:
            log.warning("backend %s is in the journal but its process is gone: lost", local.id)
            self._finish(local, TerminationReason.LOST, None)
        else:
            log.info("adopted backend %s (still running at %s)", local.id, address)
            self._ready(local, address)

    def _adopt_lost(self, row: BackendState) -> None:
        local = LocalBackend(id=row.id, template=TemplateSpec(executor="process", argv=["lost"]))
        self._add_local(local)
        self._finish(local, TerminationReason.LOST, None)

    async def on_exit(self, exit_: BackendExit) -> None:
        """Executor callback: the backend's process (or job) is gone, whatever the cause."""
        if self.pool is not None and self.pool.on_exit(exit_.backend_id):
            return
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
        for listener in list(self._stop_listeners):
            try:
                listener(backend_id, reason)
            except Exception:
                log.exception("stop listener %r failed", listener)
        try:
            await self.executor.stop(backend_id, hard=hard, reason=reason)
        except ExecutorError as exc:
            log.warning("stopping backend %s failed: %s", backend_id, exc)
            self._finish(local, reason, None)

    # ---- reports --------------------------------------------------------------------------------

    def _report(self, local: LocalBackend) -> None:
        report = local.report()
        self._reports.put_nowait(report)
        for listener in list(self._status_listeners):
            try:
                listener(report)
            except Exception:
                log.exception("status listener %r failed", listener)
        if self.journal is not None:
            self._spawn_task(self.journal.record_status(report, replay=not self._online()))

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
