"""The change feed's fast path takes only the requests it can answer exactly as the route would."""

from __future__ import annotations

import pytest

from control.http.sync_fastpath import parse_query


@pytest.mark.parametrize(
    ("query", "parsed"),
    [
        (b"since=5", (5, 0.0)),
        (b"since=5&wait=25", (5, 25.0)),
        (b"wait=0.5&since=0", (0, 0.5)),
        (b"since=9223372036854775807&wait=60", (2**63 - 1, 60.0)),
    ],
)
def test_ordinary_queries_are_taken(query: bytes, parsed: tuple[int, float]) -> None:
    assert parse_query(query) == parsed


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"wait=1",
        b"since=-1",
        b"since=1&since=2",
        b"since=1&wait=61",
        b"since=1&wait=nan",
        b"since=1&wait=1e1",
        b"since=9223372036854775808",
        b"since=%31",
        b"since=1&extra=2",
        b"since",
        b"since=1&wait=",
    ],
)
def test_anything_else_goes_to_the_route(query: bytes) -> None:
    assert parse_query(query) is None
