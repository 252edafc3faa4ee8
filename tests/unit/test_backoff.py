"""Full-jitter exponential backoff."""

from __future__ import annotations

import random

import pytest

from sync.backoff import Backoff
from sync.timing import BACKOFF_INITIAL_S, BACKOFF_MAX_S


def test_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    b = Backoff(0.5, 30.0, rand=lambda: 1.0)
    delays = [b.next_delay() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    rng = random.Random(7)
    samples = []
    for _ in range(2000):
        b = Backoff(0.5, 30.0, rand=rng.random)
        for _ in range(3):
            b.next_delay()
        samples.append(b.next_delay())  # ceiling 4.0
    assert min(samples) >= 0 and max(samples) <= 4.0
    assert min(samples) < 0.1 and max(samples) > 3.9, "the whole window is used"
    assert 1.8 < sum(samples) / len(samples) < 2.2


def test_reset_starts_again_and_retry_after_is_a_floor() -> None:
    b = Backoff(0.5, 30.0, rand=lambda: 0.0)
    for _ in range(5):
        b.next_delay()
    assert b.ceiling() == 16.0
    b.reset()
    assert b.ceiling() == 0.5
    assert b.next_delay(at_least_s=3.0) == 3.0


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(rand=lambda: 1.0)
    b.attempt = 10_000
    assert b.next_delay() == BACKOFF_MAX_S


def test_defaults_come_from_timing_and_bad_bounds_are_refused() -> None:
    b = Backoff()
    assert (b.initial_s, b.max_s) == (BACKOFF_INITIAL_S, BACKOFF_MAX_S)
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
