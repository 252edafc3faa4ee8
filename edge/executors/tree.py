"""Everything a process backend started, so that stopping it leaves nothing behind.

A backend's processes are found three ways, and the union is signalled:

* its **cgroup** (cgroup v2, when the hierarchy is mounted and writable): the edge makes one cgroup
  per backend under ``<its own cgroup>/meridian-<edge pid>/`` and moves the backend's first process
  into it right after spawning it; every process it forks afterwards is born inside, whatever
  ``setsid()`` or double-forking it does. Ending the tree writes ``cgroup.kill``.
* its **process group** (the leader is started in a new session, so the group id is its pid);
* a **process-tree walk** over ``/proc``: descendants of the leader (by parent pid), every process
  whose environment carries the backend's ``MERIDIAN_BACKEND_ID`` (inherited by children, also
  after ``setsid()`` and after their parent exited and they were re-parented to init), and their
  descendants.

Without a cgroup, a process that both empties its environment and is orphaned before the walk runs
escapes it; the cgroup closes that gap. A leader moved into its cgroup a few microseconds after
spawn could in theory fork before the move; its children still carry the environment tag.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_KILL_ROUNDS = 20


def _cgroup2_base() -> Path | None:
    """``<cgroup2 mount>/<this process's cgroup>``, when cgroup v2 is mounted."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount = next((line.split()[1] for line in mounts if line.split()[2:3] == ["cgroup2"]), None)
    rel = next((line[3:] for line in own if line.startswith("0::")), None)
    if mount is None or rel is None:
        return None
    return Path(mount) / rel.lstrip("/")


class CgroupRoot:
    """The edge's own cgroup directory for backends, or nothing when cgroup v2 is not usable."""

    def __init__(self, base: Path | None) -> None:
        self.path = base

    @classmethod
    def create(cls, enabled: bool = True) -> CgroupRoot:
        base = _cgroup2_base() if enabled else None
        if base is None:
            return cls(None)
        _remove_empty_leftovers(base)
        path = base / f"meridian-{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
            probe = path / "probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as exc:
            log.info("cgroup v2 at %s is not writable (%s); backends are tracked by a process walk", base, exc)
            return cls(None)
        return cls(path)

    def for_backend(self, backend_id: str) -> Path | None:
        if self.path is None:
            return None
        cg = self.path / backend_id
        try:
            # parents: another executor of this process may have removed the shared directory.
            cg.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create cgroup %s: %s", cg, exc)
            return None
        return cg

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


class ProcessTree:
    """The processes of one backend (see the module doc); the leader is ``pid``."""

    def __init__(self, backend_id: str, pid: int, cgroup: Path | None, *, tag: bytes | None = None) -> None:
        self.backend_id = backend_id
        self.pid = pid
        self.cgroup = cgroup
        self._tag = tag if tag is not None else f"MERIDIAN_BACKEND_ID={backend_id}".encode()
        # Once the leader is reaped its pid (and so its group id) may be recycled: from then on
        # only the cgroup, the environment tag and descendants of those identify the backend.
        self.leader_reaped = False
        if cgroup is not None:
            try:
                (cgroup / "cgroup.procs").write_text(str(pid))
            except OSError as exc:  # the leader may already be gone
                log.info("could not move backend %s into %s: %s", backend_id, cgroup, exc)

    def members(self, *, outside_group: bool = False) -> set[int]:
        """Pids of the backend's live (non-zombie) processes, the leader included while it lives;
        with ``outside_group``, only those not in the leader's process group."""
        found = set(self._cgroup_members())
        table = _process_table()
        me = os.getpid()
        by_leader = not self.leader_reaped
        roots = set(found) | ({self.pid} if by_leader else set())
        for pid, (_, pgid, _) in table.items():
            if pid != me and ((by_leader and pgid == self.pid) or self._tagged(pid)):
                roots.add(pid)
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            pid = stack.pop()
            if pid in seen or pid == me:
                continue
            seen.add(pid)
            found.add(pid)
            stack.extend(children.get(pid, ()))
        alive = {p for p in found if p in table and table[p][2] != "Z" and p != me}
        if outside_group:
            alive = {p for p in alive if table[p][1] != self.pid}
        return alive

    def signal(self, sig: signal.Signals, *, outside_group: bool = False) -> int:
        """Send ``sig`` to every member (or those outside the leader's group); how many there were."""
        pids = self.members(outside_group=outside_group)
        _send(pids, sig)
        return len(pids)

    def kill(self) -> None:
        """SIGKILL everything (repeatedly, until nothing is left: members may fork meanwhile)."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.kill").write_text("1")
        for _ in range(_KILL_ROUNDS):
            pids = self.members()
            if not pids:
                break
            _send(pids, signal.SIGKILL)
        else:
            log.error("backend %s: processes survive SIGKILL: %s", self.backend_id, sorted(self.members()))
        self._remove_cgroup()

    def _cgroup_members(self) -> list[int]:
        if self.cgroup is None:
            return []
        try:
            return [int(x) for x in (self.cgroup / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def _remove_cgroup(self) -> None:
        if self.cgroup is None:
            return
        try:
            self.cgroup.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            # Killed processes leave the cgroup only once the kernel has torn them down.
            for _ in range(200):
                if not self._cgroup_members():
                    with contextlib.suppress(OSError):
                        self.cgroup.rmdir()
                    return
                os.sched_yield()

    def _tagged(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return self._tag in f.read().split(b"\0")
        except OSError:
            return False


def _remove_empty_leftovers(base: Path) -> None:
    """Remove the directories of edges that are gone and left nothing running (rmdir fails on a
    cgroup that still holds a process or a child cgroup, so survivors are kept, e.g. for adoption)."""
    with contextlib.suppress(OSError):
        for entry in base.glob("meridian-*"):
            pid = entry.name.removeprefix("meridian-")
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                for child in [*entry.iterdir(), entry]:
                    with contextlib.suppress(OSError):
                        if child == entry or child.is_dir():
                            child.rmdir()


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid → (ppid, pgid, state) for every process /proc shows."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0].decode())
    return table


def _send(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
