"""RFC 2782 ordering of SRV records: priority first, then weighted random within a priority."""

from __future__ import annotations

import random
from collections import Counter

from sync.discovery import SrvTarget, order_srv


def _t(priority: int, weight: int, name: str) -> SrvTarget:
    return SrvTarget(priority=priority, weight=weight, port=8700, target=name)


def test_lower_priority_always_comes_first() -> None:
    records = [_t(20, 100, "backup"), _t(10, 1, "main-a"), _t(10, 1, "main-b"), _t(30, 0, "last")]
    for seed in range(50):
        order = [r.target for r in order_srv(records, random.Random(seed))]
        assert set(order[:2]) == {"main-a", "main-b"} and order[2:] == ["backup", "last"]


def test_weights_share_first_place_in_proportion() -> None:
    records = [_t(10, 90, "heavy"), _t(10, 10, "light")]
    firsts = Counter(order_srv(records, random.Random(seed))[0].target for seed in range(2000))
    assert 0.85 < firsts["heavy"] / 2000 < 0.95


def test_zero_weight_records_are_rarely_but_sometimes_first() -> None:
    records = [_t(10, 0, "zero"), _t(10, 50, "fifty")]
    firsts = Counter(order_srv(records, random.Random(seed))[0].target for seed in range(2000))
    assert 0 < firsts["zero"] < 200


def test_every_record_is_kept_once() -> None:
    records = [_t(p, w, f"{p}-{w}") for p in (1, 2) for w in (0, 1, 5)]
    assert sorted(order_srv(records, random.Random(7)), key=lambda r: r.target) == sorted(
        records, key=lambda r: r.target
    )
