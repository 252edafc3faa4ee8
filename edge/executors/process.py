"""The ``process`` executor: each backend is a local subprocess in its own process group.

* argv comes from the template; the backend listens on ``127.0.0.1:$PORT``. The port is picked by
  binding ``127.0.0.1:0`` and closing the socket, so another process may take it before the backend
  binds it. When the backend then exits before ready and its log says "address already in use", the
  start is retried once on a fresh port. (A stranger that took the port *and* answers HTTP would pass
  the probe; that window is a few milliseconds wide and accepted here.)
* env: the edge's environment minus every ``MERIDIAN_*`` variable, then the template's env, then the
  platform's variables (``PORT``, ``MERIDIAN_BACKEND_ID``, ``MERIDIAN_KEY``, ``MERIDIAN_FENCING_TOKEN``,
  ``MERIDIAN_SECRET``, ``MERIDIAN_REGION``) which a template cannot override.
* stdout and stderr go to ``<log_dir>/<backend_id>.log`` (appended, one header line per attempt, a
  closing line when it ends), capped, rotated and removed later by :mod:`edge.executors.logs`.
* ``memory_mb`` becomes ``RLIMIT_AS`` (address space), set by a tiny exec wrapper
  (``_rlimit_exec.py``) rather than ``preexec_fn``. Address space is larger than resident memory
  (runtimes reserve virtual memory), so leave headroom. ``cpu_mhz`` is **not** enforced by this
  executor: ``RLIMIT_CPU`` caps total CPU seconds, not a rate. Nomad enforces it.
* readiness: :func:`probe_ready` races ``proc.wait()``; whichever finishes first decides.
* stop: SIGTERM to the group and to every other process of the backend (:mod:`edge.executors.tree`:
  its cgroup, or a process-tree walk, so children that called ``setsid()`` are included), SIGKILL
  after ``grace_s``; ``hard`` sends SIGKILL at once. A start that fails (exit, timeout,
  cancellation) SIGKILLs at once: the backend never served anyone. Whenever the leader exits, all
  that is left of the backend's tree is SIGKILLed, so no process outlives its backend.
* exit reasons: the reason given to :meth:`stop` when we ended it, else ``failed`` with the exit
  code — including a clean exit 0, since the backend disappeared without the platform asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync.models import TemplateSpec, TerminationReason
from sync.net import free_port

from .base import (
    BackendRecord,
    BaseExecutor,
    ExitCallback,
    SpawnRequest,
    StartFailed,
    backend_env,
    check_backend_id,
    probe_until_end,
)
from .logs import LogKeeper, LogPolicy
from .readiness import NotReady
from .tree import CgroupRoot, ProcessTree

log = logging.getLogger(__name__)

_RLIMIT_WRAPPER = str(Path(__file__).with_name("_rlimit_exec.py"))
_PORT_CLASH = re.compile(rb"address already in use|EADDRINUSE", re.IGNORECASE)
_LOG_TAIL_BYTES = 64 * 1024
POOL_MEMBER_NICE = 10
"""Niceness of an unclaimed warm-pool member (back to 0 at its claim): refilling a pool — a
Python start is mostly CPU — yields to the backends and the edge already serving users."""


@dataclass(eq=False)
class _Process(BackendRecord):
    log_path: Path = Path()
    proc: asyncio.subprocess.Process | None = None
    wait_task: asyncio.Future[int] | None = None
    port: int | None = None
    adopted_pid: int | None = None
    """The process group leader of a backend adopted after an edge restart (not our child)."""
    tree: ProcessTree | None = None


class _Retry(Exception):
    """The attempt lost its port to another process: try once more on a fresh one."""


class ProcessExecutor(BaseExecutor[_Process]):
    kind = "process"

    def __init__(
        self,
        on_exit: ExitCallback,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        logs: LogPolicy | None = None,
        grace_s: float = 5.0,
        host: str = "127.0.0.1",
        cgroups: bool = True,
        history: int = 4096,
    ) -> None:
        super().__init__(on_exit, history=history)
        if logs is None:
            assert log_dir is not None, "give log_dir or logs"
            logs = LogPolicy(Path(log_dir))
        self.logs = logs
        self._keeper = LogKeeper(logs, lambda: set(self._live))
        self._want_cgroups = cgroups
        self._cgroups: CgroupRoot | None = None  # found at the first start (file I/O: in a thread)
        self._grace_s = grace_s
        self._host = host

    # ---- interface ---------------------------------------------------------------------------

    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None:
        b = self._live.get(backend_id)
        if b is None or b.ended.is_set():
            return
        if b.stop_reason is None:
            b.stop_reason = reason
        if hard:
            self._signal(b, signal.SIGKILL)
        else:
            await self._signal_tree(b, signal.SIGTERM)
            try:
                await asyncio.wait_for(b.ended.wait(), self._grace_s)
            except TimeoutError:
                log.warning("backend %s ignored SIGTERM for %gs; sending SIGKILL", backend_id, self._grace_s)
                self._signal(b, signal.SIGKILL)
        await b.reported.wait()

    async def detach(self) -> None:
        await super().detach()
        await self._keeper.close()  # the backends' cgroups stay: they are still in use

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._keeper.close()
            if self._cgroups is not None:
                await asyncio.to_thread(self._cgroups.close)

    # ---- extras (diagnostics and tests) ------------------------------------------------------

    def pid(self, backend_id: str) -> int | None:
        b = self._live.get(backend_id)
        if b is None or b.ended.is_set():
            return None
        return b.proc.pid if b.proc is not None else b.adopted_pid

    # ---- adoption (an edge restarted after a crash takes over the processes it was running) ---

    async def adopt(self, req: SpawnRequest) -> str | None:
        """Take over the still-running process of a backend an earlier edge process started: found
        by its environment (MERIDIAN_BACKEND_ID, or a claimed pool member's MERIDIAN_POOL_MEMBER), so
        a recycled pid is never mistaken for it; watched through a pidfd. Its address, or None when
        no such process lives (nothing is started)."""
        if self._closed or req.backend_id in self._live:
            return None
        found = await asyncio.to_thread(find_backend_process, process_tag(req))
        if found is None:
            return None
        pid, port = found
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return None
        b = self._new_record(req)
        b.adopted_pid, b.port = pid, port
        b.wait_task = _exit_of(pidfd)
        self._live[req.backend_id] = b
        self._mark_ready(b, self._watch)
        return f"{self._host}:{port}"

    async def kill_pool_orphans(self, node_id: str) -> int:
        """SIGKILL the unclaimed warm-pool members an earlier edge process of this node left running
        (a crash): no journal names them, so nothing would ever stop them. Claimed ones were adopted
        first (``adopt``: they are ours now and are spared). How many were killed."""
        ours = {b.req.pool.member_id for b in self._live.values() if b.req.pool is not None}
        return await asyncio.to_thread(_kill_pool_orphans, node_id, ours)

    def prioritise(self, member_id: str) -> None:
        """A warm-pool member is about to be claimed: it runs at normal priority from now on (it
        answers its claim at full speed, then serves as a backend like any other)."""
        b = self._live.get(member_id)
        leader = None if b is None else (b.proc.pid if b.proc is not None else b.adopted_pid)
        if leader is not None:
            _renice(leader, 0)

    async def _rekeyed(self, member_id: str, b: _Process) -> None:
        b.log_path = self.logs.path(b.backend_id)
        await asyncio.to_thread(self.logs.rename, member_id, b.backend_id)

    def log_path(self, backend_id: str) -> Path | None:
        b = self._record(backend_id)
        return None if b is None else b.log_path

    def tracked_by_cgroup(self) -> bool:
        """Whether backends get a cgroup (known once the first backend started)."""
        return self._cgroups is not None and self._cgroups.path is not None

    async def read_logs(self, backend_id: str, *, tail: int, follow: bool) -> AsyncIterator[bytes] | None:
        """The backend's last ``tail`` log lines, then (``follow``) what it writes until it ends;
        None when this edge has no log of it."""
        check_backend_id(backend_id)
        if not await asyncio.to_thread(self.logs.exists, backend_id):
            return None
        head, offset = await asyncio.to_thread(self.logs.tail, backend_id, tail)

        async def stream() -> AsyncIterator[bytes]:
            if head:
                yield head
            if follow:
                async for chunk in self.logs.follow(backend_id, offset, lambda: backend_id in self._live):
                    yield chunk

        return stream()

    # ---- phases: launch → await ready (→ retry once on a port clash) → watch -----------------

    def _accepts(self, template: TemplateSpec) -> bool:
        return bool(template.argv)

    def _new_record(self, req: SpawnRequest) -> _Process:
        return _Process(req=req, log_path=self.logs.path(req.backend_id))

    async def _start(self, b: _Process) -> str:
        deadline = asyncio.get_running_loop().time() + float(b.req.template.start_timeout_s)
        self._keeper.ensure_running()
        if self._cgroups is None:
            self._cgroups = await asyncio.to_thread(CgroupRoot.create, self._want_cgroups)
        for attempt in (1, 2):
            log_offset = await self._launch(b, attempt)
            try:
                return await self._await_ready(b, deadline, log_offset, may_retry=attempt == 1)
            except _Retry:
                log.warning("backend %s lost port %s to another process; retrying", b.backend_id, b.port)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _launch(self, b: _Process, attempt: int) -> int:
        """Spawn the backend on a fresh port; returns where this attempt's log begins."""
        if b.stop_reason is not None:
            await self._ended_with(b, None)
            raise StartFailed("stopped before it started")
        argv = self._argv(b.req)
        port = free_port(self._host)
        header = f"--- meridian: backend {b.backend_id} attempt {attempt} port {port} argv {argv!r}\n"
        logfd, offset = await asyncio.to_thread(self.logs.open_for_child, b.backend_id, header.encode())
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfd,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env(b.req, port),
                start_new_session=True,
            )
        except OSError as exc:
            await self._ended_with(b, None, f"cannot execute: {exc}")
            raise StartFailed(f"cannot execute {argv[0]!r}: {exc}") from exc
        finally:
            os.close(logfd)
        b.proc, b.port = proc, port
        if b.req.unclaimed:
            _renice(proc.pid, POOL_MEMBER_NICE)
        b.wait_task = asyncio.ensure_future(proc.wait())
        b.tree = await asyncio.to_thread(self._track, b.req, proc.pid)
        if b.stop_reason is not None:  # stop() came while we were spawning
            self._signal(b, signal.SIGKILL)
        return offset

    async def _await_ready(self, b: _Process, deadline: float, log_offset: int, *, may_retry: bool) -> str:
        assert b.proc is not None and b.wait_task is not None and b.port is not None
        timeout_s = float(b.req.template.start_timeout_s)
        wait_task = b.wait_task
        remaining = deadline - asyncio.get_running_loop().time()
        probe_error = await probe_until_end(
            self._host, b.port, b.req.template.ready_path, timeout_s=remaining, end=wait_task
        )
        if wait_task.done():  # exited first (also wins a tie with a successful probe)
            code = wait_task.result()
            await self._end_tree(b)
            if (
                may_retry
                and code != 0
                and b.stop_reason is None
                and await asyncio.to_thread(_log_mentions_port_clash, b.log_path, log_offset)
            ):
                raise _Retry
            await self._ended_with(b, code)
            if b.stop_reason is not None:
                raise StartFailed("stopped while starting", code)
            raise StartFailed("exited before it was ready", code)
        if probe_error is None and b.stop_reason is None:
            self._mark_ready(b, self._watch)
            return f"{self._host}:{b.port}"
        # Not ready in time (or stopped meanwhile): it never served anyone, so no grace.
        killed = await self._kill_now(b)
        await self._ended_with(b, killed)
        if b.stop_reason is not None:
            raise StartFailed("stopped while starting", killed)
        if isinstance(probe_error, NotReady):
            raise StartFailed(f"not ready within {timeout_s:g}s ({probe_error.last_error})", killed)
        raise StartFailed(f"readiness probe failed: {probe_error!r}", killed)

    async def _watch(self, b: _Process) -> None:
        assert b.wait_task is not None
        code = await b.wait_task
        if b.proc is None and b.adopted_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(b.adopted_pid, signal.SIGKILL)  # what an adopted backend left behind
        await self._end_tree(b)
        await self._ended_with(b, code)

    async def _abort(self, b: _Process) -> None:
        if b.reporting:
            await b.reported.wait()
            return
        await self._ended_with(b, await self._kill_now(b))

    async def _kill_now(self, b: _Process) -> int | None:
        """SIGKILL the backend and everything it started; its exit code."""
        self._signal(b, signal.SIGKILL)
        if b.wait_task is None or b.proc is None:
            return None
        code = await b.wait_task
        await self._end_tree(b)
        return code

    def _track(self, req: SpawnRequest, pid: int) -> ProcessTree:
        cgroup = self._cgroups.for_backend(req.backend_id) if self._cgroups is not None else None
        return ProcessTree(req.backend_id, pid, cgroup, tag=process_tag(req))

    async def _end_tree(self, b: _Process) -> None:
        """The leader has exited (and was reaped): SIGKILL whatever it left behind."""
        if b.tree is not None:
            b.tree.leader_reaped = True
            await asyncio.to_thread(b.tree.kill)

    async def _signal_tree(self, b: _Process, sig: signal.Signals) -> None:
        """``sig`` to the group at once, then to every other process of the backend (once each)."""
        self._signal(b, sig)
        if b.tree is not None and not b.ended.is_set():
            await asyncio.to_thread(functools.partial(b.tree.signal, sig, outside_group=True))

    async def _ended_with(self, b: _Process, code: int | None, note: str = "") -> None:
        """Close the backend's log with a last line (its time starts the log's expiry), report."""
        if not b.reporting:
            line = f"--- meridian: backend {b.backend_id} ended (exit code {code}) {note}".rstrip() + "\n"
            await asyncio.to_thread(self.logs.append, b.backend_id, line.encode())
        await self._report(b, code)

    # ---- helpers -----------------------------------------------------------------------------

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

    def _signal(self, b: _Process, sig: signal.Signals) -> None:
        proc = b.proc
        if proc is None:
            if b.adopted_pid is not None and not b.ended.is_set():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(b.adopted_pid, sig)
            return
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _log_mentions_port_clash(path: Path, offset: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return _PORT_CLASH.search(f.read()) is not None
    except OSError:
        return False


def _renice(pgid: int, nice: int) -> None:
    """Set the scheduling priority of a backend's process group. Lowering it back to 0 needs
    CAP_SYS_NICE (root has it); without, a claimed member keeps the pool's niceness (logged once)."""
    global _renice_refused
    try:
        os.setpriority(os.PRIO_PGRP, pgid, nice)
    except ProcessLookupError:
        pass
    except PermissionError:
        if not _renice_refused:
            _renice_refused = True
            log.warning("cannot set backend niceness to %d (no CAP_SYS_NICE): claimed pool members stay niced", nice)


_renice_refused = False


def process_tag(req: SpawnRequest) -> bytes:
    """The environment entry every process of the backend carries: its id, or for a warm-pool
    member (claimed or not) the member id it was started under."""
    if req.pool is not None:
        return f"MERIDIAN_POOL_MEMBER={req.pool.member_id}".encode()
    return f"MERIDIAN_BACKEND_ID={req.backend_id}".encode()


def _kill_pool_orphans(node_id: str, spare: set[str]) -> int:
    wanted = f"MERIDIAN_POOL_NODE={node_id}".encode()
    killed = 0
    for pid, environ in _group_leaders():
        if wanted not in environ:
            continue
        member = _env_value(environ, b"MERIDIAN_POOL_MEMBER=").decode(errors="replace")
        if member in spare:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed += 1
            log.info("killed unclaimed warm-pool member %s (pid %d) left by an earlier edge process", member, pid)
    return killed


def _env_value(environ: list[bytes], prefix: bytes) -> bytes:
    return next((v[len(prefix) :] for v in environ if v.startswith(prefix)), b"")


def _group_leaders() -> list[tuple[int, list[bytes]]]:
    """(pid, environment) of every process group leader we may read (Linux /proc)."""
    found: list[tuple[int, list[bytes]]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            pid = int(entry.name)
            if os.getpgid(pid) == pid:
                found.append((pid, environ))
        except (OSError, ValueError):
            continue
    return found


def find_backend_process(wanted: bytes) -> tuple[int, int] | None:
    """(pid, port) of the live process group leader whose environment holds `wanted` (its
    ``process_tag``; Linux /proc)."""
    for pid, environ in _group_leaders():
        if wanted not in environ:
            continue
        port = _env_value(environ, b"PORT=")
        if port.isdigit():
            return pid, int(port)
    return None


def _exit_of(pidfd: int) -> asyncio.Future[int]:
    """A future set (to None: the exit status of a process that is not our child is not ours to
    read) once the process behind `pidfd` has exited."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def exited() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited)
    return done
