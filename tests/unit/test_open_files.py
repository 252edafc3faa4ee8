"""The control plane and edges raise their soft open-file limit to the hard one, and say when that
cannot hold what they are meant to (an edge: two descriptors per proxied connection)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from sync.open_files import needed_for, raise_soft_limit


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one(low_soft_limit: int, caplog: pytest.LogCaptureFixture) -> None:
    cap = 100
    assert raise_soft_limit(needed_for(cap), "the cap") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if low_soft_limit != resource.RLIM_INFINITY:
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == low_soft_limit
    assert "open-file limit" not in caplog.text


def test_a_hard_limit_below_the_cap_is_said_in_the_log(low_soft_limit: int, caplog: pytest.LogCaptureFixture) -> None:
    cap = 10_000_000  # more than any container here allows
    soft = raise_soft_limit(needed_for(cap), "max_client_connections=10000000")
    assert soft < needed_for(cap)
    assert "that max_client_connections=10000000 needs" in caplog.text
