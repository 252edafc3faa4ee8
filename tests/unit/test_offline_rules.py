"""The offline rules both sides share (sync/offline.py): provisional fencing tokens and the survivor."""

from __future__ import annotations

import pytest

from sync.offline import NODE_TAG_BITS, node_tag, provisional_token, survivor


@pytest.mark.parametrize(
    "seen", [0, 1, 7, (1 << NODE_TAG_BITS) - 1, 1 << NODE_TAG_BITS, (5 << NODE_TAG_BITS) | 9, 10**15]
)
def test_a_provisional_token_is_greater_than_any_seen_and_carries_the_node(seen: int) -> None:
    for tag in (1, 2, 777, (1 << NODE_TAG_BITS) - 1):
        token = provisional_token(seen, tag)
        assert token > seen and token & ((1 << NODE_TAG_BITS) - 1) == tag


def test_two_nodes_that_saw_the_same_never_issue_the_same_token() -> None:
    tags = {node_tag(ordinal, f"nd-{ordinal}") for ordinal in range(1, 5000)}
    assert len(tags) == 4999 and 0 not in tags
    assert len({provisional_token(41, t) for t in tags}) == len(tags)


def test_a_node_without_an_ordinal_gets_a_stable_nonzero_tag() -> None:
    assert node_tag(None, "nd-x") == node_tag(None, "nd-x") != 0


def test_out_of_range_tags_and_exhausted_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        provisional_token(0, 0)
    with pytest.raises(ValueError):
        provisional_token(0, 1 << NODE_TAG_BITS)
    with pytest.raises(OverflowError):
        provisional_token((1 << 63) - 1, 1)


def test_the_greater_token_survives_and_equal_tokens_go_to_the_greater_id() -> None:
    assert survivor((5, "bk-a"), (9, "bk-b")) == (9, "bk-b")
    assert survivor((9, "bk-b"), (5, "bk-a")) == (9, "bk-b")
    assert survivor((5, "bk-a"), (5, "bk-b")) == survivor((5, "bk-b"), (5, "bk-a")) == (5, "bk-b")
