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

import re
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from typing import Literal, Protocol

from sync.models import TemplateSpec, TerminationReason

ExecutorStatus = Literal["starting", "ready", "exited", "unknown"]

# Backend ids name log files and Nomad jobs: keep them to a safe alphabet.
_BACKEND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class SpawnRequest:
    backend_id: str
    key: str | None
    fencing_token: int
    region: str
    secret: str  # MERIDIAN_SECRET; the proxy sends it to the backend as x-meridian-secret
    template: TemplateSpec
    template_id: str


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

    async def close(self) -> None:
        """Stop every backend this executor started (edge shutdown in tests and dev)."""
        ...


def check_backend_id(backend_id: str) -> None:
    if not _BACKEND_ID.match(backend_id):
        raise StartRefused(f"backend id {backend_id!r} is not a safe identifier")


def backend_env(req: SpawnRequest, port: str) -> dict[str, str]:
    """The template's env plus the platform's variables (API.md, "Environment of a backend").

    The platform's variables come last so a template cannot override them.
    """
    env = dict(req.template.env)
    env.update(
        {
            "PORT": port,
            "MERIDIAN_BACKEND_ID": req.backend_id,
            "MERIDIAN_KEY": req.key or "",
            "MERIDIAN_FENCING_TOKEN": str(req.fencing_token),
            "MERIDIAN_SECRET": req.secret,
            "MERIDIAN_REGION": req.region,
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
