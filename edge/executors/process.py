"""The ``process`` executor: each backend is a local subprocess in its own process group.

* argv comes from the template; the backend listens on ``127.0.0.1:$PORT``. The port is picked by
  binding ``127.0.0.1:0`` and closing the socket, so another process may take it before the backend
  binds it. When the backend then exits before ready and its log says "address already in use", the
  start is retried once on a fresh port. (A stranger that took the port *and* answers HTTP would pass
  the probe; that window is a few milliseconds wide and accepted here.)
* env: the edge's environment minus every ``MERIDIAN_*`` variable, then the template's env, then the
  platform's variables (``PORT``, ``MERIDIAN_BACKEND_ID``, ``MERIDIAN_KEY``, ``MERIDIAN_FENCING_TOKEN``,
  ``MERIDIAN_SECRET``, ``MERIDIAN_REGION``) which a template cannot override.
* stdout and stderr go to ``<log_dir>/<backend_id>.log`` (appended, one header line per attempt).
* ``memory_mb`` becomes ``RLIMIT_AS`` (address space), set by a tiny exec wrapper
  (``_rlimit_exec.py``) rather than ``preexec_fn``. Address space is larger than resident memory
  (runtimes reserve virtual memory), so leave headroom. ``cpu_mhz`` is **not** enforced by this
  executor: ``RLIMIT_CPU`` caps total CPU seconds, not a rate. Nomad enforces it.
* readiness: :func:`probe_ready` races ``proc.wait()``; whichever finishes first decides.
* stop: SIGTERM to the group, SIGKILL to the group after ``grace_s``; ``hard`` sends SIGKILL at once.
  A start that fails (exit, timeout, cancellation) SIGKILLs at once: the backend never served anyone.
  When a group leader exits, the rest of its group is SIGKILLed too, so nothing outlives a backend.
* exit reasons: the reason given to :meth:`stop` when we ended it, else ``failed`` with the exit
  code — including a clean exit 0, since the backend disappeared without the platform asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sync.models import TerminationReason

from .base import (
    BackendExit,
    ExecutorStatus,
    ExitCallback,
    SpawnRequest,
    StartFailed,
    admit_start,
    backend_env,
)
from .readiness import NotReady, probe_ready

log = logging.getLogger(__name__)

_RLIMIT_WRAPPER = str(Path(__file__).with_name("_rlimit_exec.py"))
_PORT_CLASH = re.compile(rb"address already in use|EADDRINUSE", re.IGNORECASE)
_LOG_TAIL_BYTES = 64 * 1024


@dataclass(eq=False)
class _Backend:
    req: SpawnRequest
    log_path: Path
    state: ExecutorStatus = "starting"
    proc: asyncio.subprocess.Process | None = None
    wait_task: asyncio.Future[int] | None = None
    port: int | None = None
    stop_reason: TerminationReason | None = None
    exit_code: int | None = None
    reporting: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)  # the (last) process is gone
    reported: asyncio.Event = field(default_factory=asyncio.Event)  # on_exit has returned
    monitor: asyncio.Task[None] | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (see the module doc for the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class ProcessExecutor:
    kind = "process"

    def __init__(
        self,
        on_exit: ExitCallback,
        *,
        log_dir: str | os.PathLike[str],
        grace_s: float = 5.0,
        host: str = "127.0.0.1",
        history: int = 4096,
    ) -> None:
        self._on_exit = on_exit
        self._log_dir = Path(log_dir)
        self._grace_s = grace_s
        self._host = host
        self._history = history
        self._live: dict[str, _Backend] = {}
        self._ended: OrderedDict[str, _Backend] = OrderedDict()  # bounded memory of exited ones
        self._closed = False

    # ---- interface ---------------------------------------------------------------------------

    async def start(self, req: SpawnRequest) -> str:
        admit_start(
            req,
            kind=self.kind,
            closed=self._closed,
            started=self._live.keys() | self._ended.keys(),
            spec_ok=bool(req.template.argv),
        )
        b = _Backend(req=req, log_path=self._log_dir / f"{req.backend_id}.log")
        self._live[req.backend_id] = b
        try:
            return await self._start(b)
        except asyncio.CancelledError:
            # Whoever awaited us is gone; the backend must not outlive the start it belonged to.
            await asyncio.shield(self._kill_and_report(b))
            raise

    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None:
        b = self._live.get(backend_id)
        if b is None or b.exited.is_set():
            return
        if b.stop_reason is None:
            b.stop_reason = reason
        if hard:
            self._signal(b, signal.SIGKILL)
        else:
            self._signal(b, signal.SIGTERM)
            try:
                await asyncio.wait_for(b.exited.wait(), self._grace_s)
            except TimeoutError:
                log.warning("backend %s ignored SIGTERM for %gs; sending SIGKILL", backend_id, self._grace_s)
                self._signal(b, signal.SIGKILL)
        await b.reported.wait()

    def status(self, backend_id: str) -> ExecutorStatus:
        b = self._live.get(backend_id) or self._ended.get(backend_id)
        return "unknown" if b is None else b.state

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(
            *(self.stop(bid, hard=False, reason=TerminationReason.REQUESTED) for bid in list(self._live))
        )

    # ---- extras (diagnostics and tests) ------------------------------------------------------

    def pid(self, backend_id: str) -> int | None:
        b = self._live.get(backend_id)
        return None if b is None or b.proc is None or b.exited.is_set() else b.proc.pid

    def log_path(self, backend_id: str) -> Path | None:
        b = self._live.get(backend_id) or self._ended.get(backend_id)
        return None if b is None else b.log_path

    # ---- internals ---------------------------------------------------------------------------

    def _argv(self, req: SpawnRequest) -> list[str]:
        argv = list(req.template.argv or [])
        if req.template.memory_mb is not None:
            limit = req.template.memory_mb * 1024 * 1024
            argv = [sys.executable, "-S", "-I", _RLIMIT_WRAPPER, str(limit), "--", *argv]
        return argv

    def _env(self, req: SpawnRequest, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
        env.update(backend_env(req, str(port)))
        return env

    async def _start(self, b: _Backend) -> str:
        req = b.req
        loop = asyncio.get_running_loop()
        timeout_s = float(req.template.start_timeout_s)
        deadline = loop.time() + timeout_s
        argv = self._argv(req)
        await asyncio.to_thread(self._log_dir.mkdir, parents=True, exist_ok=True)
        for attempt in (1, 2):
            if b.stop_reason is not None:
                await self._report(b, None)
                raise StartFailed("stopped before it started")
            port = free_port(self._host)
            header = f"--- meridian: backend {req.backend_id} attempt {attempt} port {port} argv {argv!r}\n"
            logfile, offset = await asyncio.to_thread(_open_log, b.log_path, header.encode())
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._env(req, port),
                    start_new_session=True,
                )
            except OSError as exc:
                await self._report(b, None)
                raise StartFailed(f"cannot execute {argv[0]!r}: {exc}") from exc
            finally:
                logfile.close()
            b.proc, b.port = proc, port
            b.wait_task = wait_task = asyncio.ensure_future(proc.wait())
            if b.stop_reason is not None:  # stop() came while we were spawning
                self._signal(b, signal.SIGKILL)
            probe = asyncio.create_task(
                probe_ready(self._host, port, req.template.ready_path, timeout_s=deadline - loop.time())
            )
            try:
                await asyncio.wait({probe, wait_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not probe.done():
                    probe.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await probe

            if wait_task.done():  # exited first (also wins a tie with a successful probe)
                code = wait_task.result()
                _kill_group(proc.pid)
                if (
                    attempt == 1
                    and code != 0
                    and b.stop_reason is None
                    and await asyncio.to_thread(_log_mentions_port_clash, b.log_path, offset)
                ):
                    log.warning("backend %s lost port %d to another process; retrying", req.backend_id, port)
                    continue
                await self._report(b, code)
                if b.stop_reason is not None:
                    raise StartFailed("stopped while starting", code)
                raise StartFailed("exited before it was ready", code)

            probe_error = probe.exception()
            if probe_error is None and b.stop_reason is None:
                b.state = "ready"
                b.monitor = asyncio.create_task(self._watch(b, wait_task))
                return f"{self._host}:{port}"
            # Not ready in time (or stopped meanwhile): it never served anyone, so no grace.
            self._signal(b, signal.SIGKILL)
            code = await wait_task
            _kill_group(proc.pid)
            await self._report(b, code)
            if b.stop_reason is not None:
                raise StartFailed("stopped while starting", code)
            if isinstance(probe_error, NotReady):
                raise StartFailed(f"not ready within {timeout_s:g}s ({probe_error.last_error})", code)
            raise StartFailed(f"readiness probe failed: {probe_error!r}", code)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _watch(self, b: _Backend, wait_task: asyncio.Future[int]) -> None:
        code = await wait_task
        if b.proc is not None:
            _kill_group(b.proc.pid)
        await self._report(b, code)

    async def _kill_and_report(self, b: _Backend) -> None:
        if b.reporting:
            await b.reported.wait()
            return
        self._signal(b, signal.SIGKILL)
        code = None
        if b.wait_task is not None and b.proc is not None:
            code = await b.wait_task
            _kill_group(b.proc.pid)
        await self._report(b, code)

    def _signal(self, b: _Backend, sig: signal.Signals) -> None:
        proc = b.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    async def _report(self, b: _Backend, code: int | None) -> None:
        """Record the end of a backend and call on_exit — once, whatever the path."""
        if b.reporting:
            return
        b.reporting = True
        b.state = "exited"
        b.exit_code = code
        b.exited.set()
        bid = b.req.backend_id
        self._live.pop(bid, None)
        self._ended[bid] = b
        while len(self._ended) > self._history:
            self._ended.popitem(last=False)
        reason = b.stop_reason or TerminationReason.FAILED
        try:
            await self._on_exit(BackendExit(backend_id=bid, exit_code=code, reason=reason))
        except Exception:
            log.exception("on_exit callback failed for backend %s", bid)
        finally:
            b.reported.set()


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group whose leader has exited (and been reaped).

    Linux does not hand out a pid that is still some group's id, so while any member lives the
    group id cannot have been recycled; an empty group answers ESRCH.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _open_log(path: Path, header: bytes) -> tuple[BinaryIO, int]:
    f = open(path, "ab")  # handed to the child, closed by the caller
    offset = f.tell()
    f.write(header)
    f.flush()
    return f, offset


def _log_mentions_port_clash(path: Path, offset: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return _PORT_CLASH.search(f.read()) is not None
    except OSError:
        return False
