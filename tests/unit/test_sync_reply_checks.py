"""The sync loop's check of a reply before it is applied (contiguity, epoch, order)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.loop import reply_problem
from sync.models import ChangesReply


def _reply(since: int, to: int, versions: list[int], epoch: str = "e", op: str = "upsert") -> ChangesReply:
    changes: list[dict[str, Any]] = [
        {"version": v, "kind": "region", "id": "r", "op": op, "body": {"name": "r"} if op == "upsert" else None}
        for v in versions
    ]
    return ChangesReply.model_validate({"epoch": epoch, "from": since, "to": to, "changes": changes, "more": False})


@pytest.mark.parametrize(
    "reply",
    [
        _reply(5, 5, []),
        _reply(5, 9, []),  # a bookmark past versions that replicate nothing
        _reply(5, 6, [6]),
        _reply(5, 8, [6, 6, 7, 8, 8]),
        _reply(5, 8, [6], op="delete"),
    ],
)
def test_replies_that_follow_on(reply: ChangesReply) -> None:
    assert reply_problem(reply, 5, "e") is None


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (_reply(6, 7, [7]), "starts at version 6"),
        (_reply(4, 7, [7]), "starts at version 4"),
        (_reply(5, 4, []), "goes back"),
        (_reply(5, 8, [7, 6]), "out of order"),
        (_reply(5, 6, [7]), "out of order"),
        (_reply(5, 6, [5]), "out of order"),
        (_reply(5, 6, [6], epoch="other"), "epoch changed"),
    ],
)
def test_replies_that_do_not(reply: ChangesReply, why: str) -> None:
    problem = reply_problem(reply, 5, "e")
    assert problem is not None and why in problem


def test_an_upsert_without_a_body_is_refused() -> None:
    reply = ChangesReply.model_validate(
        {
            "epoch": "e",
            "from": 5,
            "to": 6,
            "more": False,
            "changes": [{"version": 6, "kind": "backend", "id": "b", "op": "upsert", "body": None}],
        }
    )
    assert "without a body" in (reply_problem(reply, 5, "e") or "")
