"""Offline operation, the part both sides share: provisional fencing tokens, the rule that decides
which of two live backends of a key survives, and the wire models of a journal replay.

Provisional fencing tokens. An edge that spawns a key while the control plane is unreachable
gives the backend the token

    ((seen >> NODE_TAG_BITS) + 1) << NODE_TAG_BITS | tag

where `seen` is the greatest token the edge knows for the key (its replica's key counter, and its
own journal) and `tag` (1 … 2**NODE_TAG_BITS - 1) is the node's ordinal, unique per node and
handed out by the control plane. The token is strictly greater than `seen`, and two nodes cut
off with the same knowledge of a key get different tokens — so no two live backends of a key
ever share one.

The survivor rule. When two live backends claim one key, the one with the greater fencing token
survives; equal tokens (only possible for nodes whose ordinals collide modulo 2**NODE_TAG_BITS)
are decided by the greater backend id. The other is terminated with reason `superseded`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from sync.models import BackendStatus, Name, StatusReport, Strict, Wire
from sync.validation import Key

NODE_TAG_BITS = 16
MAX_FENCING_TOKEN = (1 << 63) - 1
MAX_REPLAY_ENTRIES = 5000
"""Entries per replay request; an edge with more sends several."""


def node_tag(ordinal: int | None, node_id: str) -> int:
    """The low bits of this node's provisional tokens: its ordinal, else (an edge that has not
    learnt it yet) a stable hash of its id. Never 0."""
    span = (1 << NODE_TAG_BITS) - 1
    if ordinal is not None and ordinal > 0:
        return (ordinal - 1) % span + 1
    return sum(node_id.encode()) * 2654435761 % span + 1


def provisional_token(seen: int, tag: int) -> int:
    """A fencing token strictly greater than `seen`, ending in this node's tag."""
    if not 0 < tag < 1 << NODE_TAG_BITS:
        raise ValueError(f"node tag {tag} is out of range")
    token = ((max(seen, 0) >> NODE_TAG_BITS) + 1) << NODE_TAG_BITS | tag
    if token > MAX_FENCING_TOKEN:
        raise OverflowError("fencing tokens of this key are exhausted")
    return token


def survivor(a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str]:
    """Which of two (fencing_token, backend_id) claims on one key survives (see the module doc)."""
    return max(a, b)


class OfflineSpawn(Strict):
    """A backend an edge started while the control plane was unreachable, as its journal holds it."""

    id: str = Field(pattern=r"^bk-[A-Za-z0-9_-]{1,60}$")
    key: Key | None = None
    template_name: Name
    template_id: str = Field(max_length=128)
    region: Name
    node_id: str = Field(max_length=64)
    fencing_token: int = Field(ge=1, le=MAX_FENCING_TOKEN)
    secret: str = Field(min_length=16, max_length=128)
    owner_token_id: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=256)
    created_at: datetime


class JournalEntry(Strict):
    """One replayed fact: an offline spawn, or a backend's status change. Exactly one is set."""

    seq: int = Field(ge=1)
    spawn: OfflineSpawn | None = None
    report: StatusReport | None = None


class ReplayIn(Strict):
    entries: list[JournalEntry] = Field(max_length=MAX_REPLAY_ENTRIES)


class ReplayOutcome(StrEnum):
    ADOPTED = "adopted"
    """The offline spawn is now the key's backend, with its own fencing token."""
    SUPERSEDED = "superseded"
    """Another backend of the key survived; this one is terminated `superseded`."""
    APPLIED = "applied"
    """A status report: taken (or already known: replaying twice changes nothing)."""
    IGNORED = "ignored"
    """A report for a backend the control plane does not know, or of another node."""


class ReplayResult(Wire):
    seq: int
    backend_id: str
    outcome: ReplayOutcome
    status: BackendStatus | None = None
    winner_id: str | None = None


class ReplayOut(Wire):
    version: int | None = None
    results: list[ReplayResult]
