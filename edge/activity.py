"""Open connections and last activity per backend: what idle shutdown is decided on."""

from __future__ import annotations

import time


class Activity:
    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self.started = 0
        """Proxied exchanges begun since start (a plain int: the fast path pays nothing more)."""

    def begin(self, backend_id: str) -> None:
        self.started += 1
        self._open[backend_id] = self._open.get(backend_id, 0) + 1
        self._last[backend_id] = time.monotonic()

    def end(self, backend_id: str) -> None:
        left = self._open.get(backend_id, 1) - 1
        if left <= 0:
            self._open.pop(backend_id, None)
        else:
            self._open[backend_id] = left
        self._last[backend_id] = time.monotonic()

    def touch(self, backend_id: str) -> None:
        self._last[backend_id] = time.monotonic()

    def open_connections(self, backend_id: str) -> int:
        return self._open.get(backend_id, 0)

    def idle_for(self, backend_id: str, now: float) -> float:
        """Seconds since the last connection ended (0 while any is open)."""
        if self._open.get(backend_id):
            return 0.0
        return now - self._last.setdefault(backend_id, now)

    def forget(self, backend_id: str) -> None:
        self._open.pop(backend_id, None)
        self._last.pop(backend_id, None)

    def total_open(self) -> int:
        return sum(self._open.values())
