"""Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, initial * 2**n)).

Full jitter spreads a fleet's retries over the whole window, so many edges that lost the control
plane at the same moment do not come back at the same moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sync.timing import BACKOFF_INITIAL_S, BACKOFF_MAX_S


class Backoff:
    def __init__(
        self,
        initial_s: float = BACKOFF_INITIAL_S,
        max_s: float = BACKOFF_MAX_S,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rand = rand
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 64))

    def next_delay(self, at_least_s: float = 0.0) -> float:
        """The delay before the next retry (never below `at_least_s`, e.g. a server's Retry-After)."""
        delay = self._rand() * self.ceiling()
        self.attempt += 1
        return max(delay, at_least_s)

    def reset(self) -> None:
        """After a success: the next failure starts again from `initial_s`."""
        self.attempt = 0
