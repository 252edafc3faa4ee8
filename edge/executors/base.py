"""The executor interface: how an edge node starts, stops and watches its backends.

An executor is built with an ``on_exit`` callback and then driven with ``start`` / ``stop``:

* ``start(req)`` returns ``"host:port"`` only once the backend answered its readiness probe. If the
  backend exits first, or the template's ``start_timeout_s`` passes, or it cannot be launched,
  ``start`` kills whatever it started and raises :class:`StartFailed`; when the infrastructure behind
  the executor is unreachable it raises :class:`ExecutorUnavailable`. It raises
  :class:`StartRefused` when it will not even try (closed executor, duplicate or unsafe backend id,
  template for another executor).
* ``on_exit`` is called **exactly once** for every backend ``start`` accepted (everything but
  ``StartRefused``) — whether it failed to start, was cancelled while starting, crashed later, or was
  stopped — and has been called by the time ``start`` raises or ``stop`` returns. Its reason: the
  one passed to ``stop`` when the platform ended it; otherwise ``failed`` (``lost`` when Nomad lost
  the node), with the exit code when known — also for a clean exit 0 after ready: a backend that
  disappears on its own has failed its key.
* ``stop`` is idempotent (unknown or already-ended backends are a no-op); the first reason wins.
  ``on_exit`` may call ``stop`` and ``status``.
* ``status(backend_id)`` answers from the executor's own bookkeeping, without I/O.

``edge/`` never imports ``control/``; the shared vocabulary comes from ``sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from edge.template_env import missing_edge_secrets, resolve_env
from sync.models import TemplateSpec, TerminationReason
from sync.routing import base_path

from .readiness import probe_ready

log = logging.getLogger(__name__)

ExecutorStatus = Literal["starting", "ready", "exited", "unknown"]

# Backend ids name log files and Nomad jobs: keep them to a safe alphabet.
_BACKEND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class PoolTag:
    """A warm-pool member's process: started without a backend's identity, under ``member_id``
    (``MERIDIAN_POOL_MEMBER``, what finds its processes before and after a claim) by ``node_id``
    (``MERIDIAN_POOL_NODE``, what finds the unclaimed ones a crashed edge left behind)."""

    member_id: str
    node_id: str


@dataclass(frozen=True)
class SpawnRequest:
    backend_id: str
    key: str | None
    fencing_token: int
    region: str
    secret: str  # MERIDIAN_SECRET; the proxy sends it to the backend as x-meridian-secret
    template: TemplateSpec
    template_id: str
    pool: PoolTag | None = None
    """Set for a warm-pool member (started as ``backend_id == pool.member_id``, no key) and kept
    when a claim gives it a backend's identity (``rekey``)."""
    last_address: str | None = None
    """Adoption only: where the backend answered when an earlier edge process last saw it (the
    journal's word), for an executor that cannot ask its platform right now."""
    traceparent: str | None = None
    """The trace context of the connect that created the backend (from its record), so the spawn
    joins that trace even when it starts before the replica has the record (the fast route)."""

    @property
    def unclaimed(self) -> bool:
        return self.pool is not None and self.backend_id == self.pool.member_id


@dataclass(frozen=True)
class BackendExit:
    backend_id: str
    # The process exit status when known; negative -N means "killed by signal N" (asyncio's
    # convention). None when the executor cannot tell (e.g. a Nomad job that was purged).
    exit_code: int | None
    reason: TerminationReason


ExitCallback = Callable[[BackendExit], Awaitable[None]]


class ExecutorError(Exception):
    """Base of every error an executor raises; executor-library exceptions never escape."""


class StartRefused(ExecutorError):
    """``start`` refused the request before attempting anything (closed executor, duplicate or unsafe
    backend id, a template for another executor). Nothing ran, so ``on_exit`` is not called."""


class StartFailed(ExecutorError):
    """The backend did not become ready: it exited, timed out, or could not be launched.

    ``reason`` is a human-readable explanation; ``exit_code`` is the backend's exit status when it
    ran and exited (negative -N: killed by signal N), else None.
    """

    def __init__(self, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason if exit_code is None else f"{reason} (exit code {exit_code})")
        self.reason = reason
        self.exit_code = exit_code


class ExecutorUnavailable(ExecutorError):
    """The infrastructure the executor drives (e.g. the Nomad API) cannot be reached."""


class Executor(Protocol):
    kind: str

    async def start(self, req: SpawnRequest) -> str:
        """Launch the backend and return ``"host:port"`` once its readiness probe passed."""
        ...

    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None:
        """End the backend (gracefully unless ``hard``); returns once it is gone and reported."""
        ...

    def status(self, backend_id: str) -> ExecutorStatus: ...

    async def rekey(self, member_id: str, req: SpawnRequest) -> bool:
        """Know a claimed warm-pool member by its backend's id from now on (same process)."""
        ...

    async def close(self) -> None:
        """Stop every backend this executor started (edge shutdown in tests and dev)."""
        ...


def check_backend_id(backend_id: str) -> None:
    if not _BACKEND_ID.match(backend_id):
        raise StartRefused(f"backend id {backend_id!r} is not a safe identifier")


def backend_env(req: SpawnRequest, port: str) -> dict[str, str]:
    """The one place a backend's environment is built, for every executor: the template's env,
    then the platform's variables (API.md, "Environment of a backend"), last so a template cannot
    override them. (An executor adds only what its platform needs, e.g. the process executor's
    inherited edge environment minus ``MERIDIAN_*``.)
    """
    env = resolve_env(req.template.env)  # edge-side secrets resolved here (edge/template_env.py)
    if req.pool is not None:  # a warm-pool member: its identity comes with the claim (app-guide.md)
        env.update(
            {
                "PORT": port,
                "MERIDIAN_SECRET": req.secret,
                "MERIDIAN_REGION": req.region,
                "MERIDIAN_POOL_MEMBER": req.pool.member_id,
                "MERIDIAN_POOL_NODE": req.pool.node_id,
            }
        )
        return env
    env.update(
        {
            "PORT": port,
            "MERIDIAN_BACKEND_ID": req.backend_id,
            "MERIDIAN_KEY": req.key or "",
            "MERIDIAN_FENCING_TOKEN": str(req.fencing_token),
            "MERIDIAN_SECRET": req.secret,
            "MERIDIAN_REGION": req.region,
            "MERIDIAN_BASE_PATH": base_path(req.backend_id),
        }
    )
    return env


def admit_start(req: SpawnRequest, *, kind: str, closed: bool, started: Container[str], spec_ok: bool) -> None:
    """The checks every executor makes before launching anything (raises StartRefused)."""
    if closed:
        raise StartRefused("executor is closed")
    check_backend_id(req.backend_id)
    if req.template.executor != kind or not spec_ok:
        raise StartRefused(f"template of {req.backend_id} is not a {kind} template with what it needs (argv or image)")
    if req.backend_id in started:
        raise StartRefused(f"backend {req.backend_id} was already started")
    missing = missing_edge_secrets(req.template.env)  # tenancy: edge-side secrets (edge/template_env.py)
    if missing:
        raise StartRefused(f"template of {req.backend_id} names edge environment variables this edge lacks: {missing}")


@dataclass(eq=False)
class BackendRecord:
    """Everything an executor knows about one backend it accepted; executors extend it.

    ``ended`` is set once the backend is gone (reporting has begun), ``reported`` once ``on_exit``
    returned. ``monitor`` watches a ready backend for an end nobody asked for.
    """

    req: SpawnRequest
    state: ExecutorStatus = "starting"
    stop_reason: TerminationReason | None = None
    exit_code: int | None = None
    reporting: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    monitor: asyncio.Task[None] | None = None

    @property
    def backend_id(self) -> str:
        return self.req.backend_id


R = TypeVar("R", bound=BackendRecord)


class BaseExecutor(ABC, Generic[R]):
    """What every executor shares: admission, the live/ended bookkeeping, ``status``, ``close``
    and the exactly-once exit report. A subclass says which templates it takes (:meth:`_accepts`),
    builds its record (:meth:`_new_record`), runs the start phases (:meth:`_start`), ends a backend
    whose start was cancelled (:meth:`_abort`) and implements ``stop``.
    """

    kind: str

    def __init__(self, on_exit: ExitCallback, *, history: int = 4096) -> None:
        self._on_exit = on_exit
        self._history = history
        self._live: dict[str, R] = {}
        self._ended: OrderedDict[str, R] = OrderedDict()  # bounded memory of ended backends
        self._closed = False

    # ---- interface ---------------------------------------------------------------------------

    async def start(self, req: SpawnRequest) -> str:
        admit_start(
            req,
            kind=self.kind,
            closed=self._closed,
            started=self._live.keys() | self._ended.keys(),
            spec_ok=self._accepts(req.template),
        )
        rec = self._new_record(req)
        self._live[req.backend_id] = rec
        try:
            return await self._start(rec)
        except asyncio.CancelledError:
            # Whoever awaited us is gone; the backend must not outlive the start it belonged to.
            await asyncio.shield(self._abort(rec))
            raise

    @abstractmethod
    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None: ...

    def status(self, backend_id: str) -> ExecutorStatus:
        rec = self._record(backend_id)
        return "unknown" if rec is None else rec.state

    async def detach(self) -> None:
        """Take no new backends and leave the running ones running, unwatched (the edge exits for an
        upgrade; the next edge process adopts and watches them): no exit is reported from now on.
        Unclaimed warm-pool members are stopped first: no journal names them, so nothing would
        adopt them (the next edge's pool starts its own)."""
        self._closed = True
        members = [bid for bid, rec in self._live.items() if rec.req.unclaimed]
        await asyncio.gather(
            *(self.stop(bid, hard=True, reason=TerminationReason.REQUESTED) for bid in members), return_exceptions=True
        )
        watchers = [rec.monitor for rec in self._live.values() if rec.monitor is not None]
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    async def rekey(self, member_id: str, req: SpawnRequest) -> bool:
        """A claimed warm-pool member is known by its backend's id from now on (same process, same
        watch; its exit is reported under ``req.backend_id``). False when the member is not ready."""
        rec = self._live.get(member_id)
        if rec is None or rec.state != "ready" or rec.reporting or self._record(req.backend_id) is not None:
            return False
        check_backend_id(req.backend_id)
        del self._live[member_id]
        rec.req = req
        self._live[req.backend_id] = rec
        await self._rekeyed(member_id, rec)
        return True

    async def _rekeyed(self, member_id: str, rec: R) -> None:
        """What a subclass renames after a claim (e.g. the log file)."""

    async def close(self) -> None:
        self._closed = True
        ids = list(self._live)
        results = await asyncio.gather(
            *(self.stop(bid, hard=False, reason=TerminationReason.REQUESTED) for bid in ids),
            return_exceptions=True,
        )
        errors = [(bid, r) for bid, r in zip(ids, results, strict=True) if isinstance(r, BaseException)]
        for bid, err in errors:
            log.error("could not stop backend %s: %s", bid, err)
        if errors:
            raise ExecutorError(f"{len(errors)} backend(s) could not be stopped: {errors[0][1]}")

    async def read_logs(self, backend_id: str, *, tail: int, follow: bool) -> AsyncIterator[bytes] | None:
        """The backend's last ``tail`` log lines, then (``follow``) what it writes until it ends;
        None when this executor keeps no log of it."""
        return None

    # ---- for subclasses ----------------------------------------------------------------------

    @abstractmethod
    def _accepts(self, template: TemplateSpec) -> bool:
        """Whether the template has what this executor needs (argv, image)."""

    @abstractmethod
    def _new_record(self, req: SpawnRequest) -> R: ...

    @abstractmethod
    async def _start(self, rec: R) -> str:
        """The start phases; returns the address once ready. Every failure is reported first."""

    @abstractmethod
    async def _abort(self, rec: R) -> None:
        """End a backend whose start was cancelled, and report it."""

    def _record(self, backend_id: str) -> R | None:
        return self._live.get(backend_id) or self._ended.get(backend_id)

    def _mark_ready(self, rec: R, watch: Callable[[R], Awaitable[None]]) -> None:
        rec.state = "ready"
        rec.monitor = asyncio.create_task(watch(rec), name=f"watch-{rec.backend_id}")  # type: ignore[arg-type]

    async def _report(self, rec: R, code: int | None, reason: TerminationReason | None = None) -> None:
        """Record the end of a backend and call on_exit — once, whatever the path.

        The reason is the one given to ``stop`` when the platform ended it, else ``reason``, else
        ``failed``.
        """
        if rec.reporting:
            return
        rec.reporting = True
        rec.state = "exited"
        rec.exit_code = code
        rec.ended.set()
        bid = rec.backend_id
        self._live.pop(bid, None)
        self._ended[bid] = rec
        while len(self._ended) > self._history:
            self._ended.popitem(last=False)
        final = rec.stop_reason or reason or TerminationReason.FAILED
        try:
            await self._on_exit(BackendExit(backend_id=bid, exit_code=code, reason=final))
        except Exception:
            log.exception("on_exit callback failed for backend %s", bid)
        finally:
            rec.reported.set()
            if rec.monitor is not None and rec.monitor is not asyncio.current_task():
                rec.monitor.cancel()


async def probe_until_end(
    host: str, port: int, path: str, *, timeout_s: float, end: asyncio.Future[Any]
) -> BaseException | None:
    """Run the readiness probe until it passes, fails or ``end`` completes, whichever is first.

    Returns the probe's error (None when it passed); callers check ``end.done()`` first: an end
    that came first (or tied with a passing probe) wins.
    """
    probe = asyncio.create_task(probe_ready(host, port, path, timeout_s=timeout_s))
    try:
        await asyncio.wait({probe, end}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not probe.done():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await probe
    if not probe.done() or probe.cancelled():
        return None
    return probe.exception()
