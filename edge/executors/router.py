"""The executors of one edge, behind the one :class:`~edge.executors.base.Executor` interface the
drone drives: ``start`` goes to the executor the template names, ``stop`` and ``status`` to
whichever executor knows the backend. A template for an executor this edge lacks is refused
(``StartRefused``) before anything runs; the control plane refuses such connects earlier, from the
executors each edge lists in its heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from sync.models import ExecutorKind, TerminationReason

from .base import BaseExecutor, ExecutorError, ExecutorStatus, SpawnRequest, StartRefused

__all__ = ["ExecutorError", "Executors"]

log = logging.getLogger(__name__)


class Executors:
    kind = "router"

    def __init__(self, executors: Mapping[str, BaseExecutor[Any]]) -> None:
        self._by_kind = dict(executors)

    @property
    def kinds(self) -> list[ExecutorKind]:
        """What this edge can run, in a stable order (reported by every heartbeat)."""
        return [cast(ExecutorKind, kind) for kind in sorted(self._by_kind)]

    def get(self, kind: str) -> BaseExecutor[Any] | None:
        return self._by_kind.get(kind)

    async def start(self, req: SpawnRequest) -> str:
        executor = self._by_kind.get(req.template.executor)
        if executor is None:
            raise StartRefused(f"this edge has no {req.template.executor!r} executor (it has: {', '.join(self.kinds)})")
        return await executor.start(req)

    def _owner(self, backend_id: str) -> BaseExecutor[Any] | None:
        for executor in self._by_kind.values():
            if executor.status(backend_id) != "unknown":
                return executor
        return None

    async def stop(self, backend_id: str, *, hard: bool, reason: TerminationReason) -> None:
        executor = self._owner(backend_id)
        if executor is not None:
            await executor.stop(backend_id, hard=hard, reason=reason)

    def status(self, backend_id: str) -> ExecutorStatus:
        executor = self._owner(backend_id)
        return "unknown" if executor is None else executor.status(backend_id)

    async def adopt(self, req: SpawnRequest) -> str | None:
        """Take over a backend an earlier edge process started (edge/drone.py `restore`)."""
        adopt = getattr(self._by_kind.get(req.template.executor), "adopt", None)
        return await adopt(req) if adopt is not None else None

    async def rekey(self, member_id: str, req: SpawnRequest) -> bool:
        """A claimed warm-pool member takes its backend's id (edge/warm_pool.py)."""
        owner = self._owner(member_id)
        return await owner.rekey(member_id, req) if owner is not None else False

    def prioritise(self, member_id: str) -> None:
        prioritise = getattr(self._owner(member_id), "prioritise", None)
        if prioritise is not None:
            prioritise(member_id)

    async def kill_pool_orphans(self, node_id: str) -> int:
        kill = getattr(self._by_kind.get("process"), "kill_pool_orphans", None)
        return await kill(node_id) if kill is not None else 0

    def pid(self, backend_id: str) -> int | None:
        pid = getattr(self._owner(backend_id), "pid", None)
        return pid(backend_id) if pid is not None else None

    async def read_logs(self, backend_id: str, *, tail: int, follow: bool) -> AsyncIterator[bytes] | None:
        """The backend's log from whichever executor has it; None when none has."""
        owner = self._owner(backend_id)
        candidates = [owner] if owner is not None else list(self._by_kind.values())
        for executor in candidates:
            stream = await executor.read_logs(backend_id, tail=tail, follow=follow)
            if stream is not None:
                return stream
        return None

    async def detach(self) -> None:
        """Leave every backend running (the edge exits for an upgrade; the next one adopts them)."""
        await asyncio.gather(*(e.detach() for e in self._by_kind.values()))

    async def close(self) -> None:
        results = await asyncio.gather(*(e.close() for e in self._by_kind.values()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise ExecutorError(f"{len(errors)} executor(s) did not close cleanly: {errors[0]}")
