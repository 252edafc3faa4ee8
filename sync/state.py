"""The replicated state, typed: one model per change kind.

The control plane builds every change row and every snapshot line from these models
(`state.body()`), and the edge's replica validates what it receives into them and its lookups
return them. The wire stays plain JSON objects; a model ignores fields it does not know, so
a newer control plane may add some without breaking older edges.

Models are frozen: a lookup may hand the same object to several callers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict

from sync.models import BackendStatus, ChangeKind, Scope, TemplateSpec, TerminationReason

LIVE_STATUSES: frozenset[BackendStatus] = frozenset(s for s in BackendStatus if s.is_live)
"""The one definition of "live" (the backend holds its key): scheduled, starting, ready."""
LIVE_STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in BackendStatus if s.is_live)
"""The same, as the strings stored in the database (for SQL parameters)."""


class State(BaseModel):
    """One replicated object. `KIND` names its change kind; `object_id` is its id in the change log."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    KIND: ClassVar[ChangeKind]

    @property
    def object_id(self) -> str:
        raise NotImplementedError

    def body(self) -> dict[str, Any]:
        """The object as it travels in change rows and snapshot lines."""
        return self.model_dump(mode="json")

    def canonical(self) -> bytes:
        """The body as canonical JSON (sorted keys): what replicas store and compare."""
        return orjson.dumps(self.body(), option=orjson.OPT_SORT_KEYS)


class RegionState(State):
    KIND = ChangeKind.REGION
    name: str
    lat: float
    lon: float
    edge_url: str
    capacity: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def object_id(self) -> str:
        return self.name


class NodeState(State):
    KIND = ChangeKind.NODE
    id: str
    region: str
    address: str
    capacity: int
    ordinal: int | None = None
    """Unique per node: the low bits of its provisional fencing tokens (sync/offline.py)."""

    @property
    def object_id(self) -> str:
        return self.id


class TemplateState(State):
    KIND = ChangeKind.TEMPLATE
    id: str
    spec: TemplateSpec

    @property
    def object_id(self) -> str:
        return self.id


class TemplateNameState(State):
    """A template name and the content-addressed template it points at."""

    KIND = ChangeKind.TEMPLATE_NAME
    name: str
    id: str

    @property
    def object_id(self) -> str:
        return self.name


class BackendState(State):
    KIND = ChangeKind.BACKEND
    id: str
    key: str | None = None
    template_name: str
    template_id: str
    region: str
    node_id: str
    address: str | None = None
    status: BackendStatus
    fencing_token: int
    owner_token_id: str | None = None
    user_id: str | None = None
    secret: str
    termination_reason: TerminationReason | None = None
    exit_code: int | None = None
    created_at: datetime
    status_changed_at: datetime
    traceparent: str | None = None
    """The trace of the connect that created it (first change row only; see sync/telemetry.py)."""

    @property
    def object_id(self) -> str:
        return self.id

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def is_terminated(self) -> bool:
        return self.status is BackendStatus.TERMINATED


class KeyState(State):
    """A key's current backend and its fencing-token counter (kept after the backend ended)."""

    KIND = ChangeKind.KEY
    key: str
    backend_id: str | None = None
    fencing_token: int
    updated_at: datetime | None = None

    @property
    def object_id(self) -> str:
        return self.key


class SigningKeyState(State):
    KIND = ChangeKind.SIGNING_KEY
    id: str
    secret: str
    created_at: datetime
    retired_at: datetime | None = None

    @property
    def object_id(self) -> str:
        return self.id


class RevocationState(State):
    """Connection tokens of `backend_id` issued at or before `revoked_at` (for one user, or all)."""

    KIND = ChangeKind.REVOCATION
    id: str
    backend_id: str
    user_id: str | None = None
    revoked_at: datetime

    @property
    def object_id(self) -> str:
        return self.id


class ApiTokenState(State):
    """What edges hold of an API token: the hex sha256 of its secret (never the secret itself)."""

    KIND = ChangeKind.API_TOKEN
    hash: str
    token_id: str
    scopes: tuple[Scope, ...]
    key_prefix: str | None = None
    """Confinement (sync/confinement.py): only keys with this prefix."""
    user: str | None = None
    """Confinement: every connection token it obtains is for this user."""
    templates: tuple[str, ...] | None = None
    """Confinement: only these templates."""
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def object_id(self) -> str:
        return self.hash


STATE_MODELS: dict[ChangeKind, type[State]] = {
    m.KIND: m
    for m in (
        RegionState,
        NodeState,
        TemplateState,
        TemplateNameState,
        BackendState,
        KeyState,
        SigningKeyState,
        RevocationState,
        ApiTokenState,
    )
}
"""The model of every change kind."""

S = TypeVar("S", bound=State)


class Row(Protocol):
    """A database row (asyncpg.Record) or a dict: what `dict(row)` accepts."""

    def keys(self) -> Iterable[str]: ...

    def __getitem__(self, key: str, /) -> Any: ...


def parse(kind: ChangeKind, body: Row) -> State:
    """Validate a change body (or a snapshot line's body, or a database row) into its model."""
    return STATE_MODELS[kind].model_validate(dict(body))


def parse_json(kind: ChangeKind, raw: bytes) -> State:
    return STATE_MODELS[kind].model_validate_json(raw)


def from_row(model: type[S], row: Row) -> S:
    """A model from a database row (asyncpg.Record or dict)."""
    return model.model_validate(dict(row))


__all__ = [
    "LIVE_STATUSES",
    "LIVE_STATUS_VALUES",
    "STATE_MODELS",
    "ApiTokenState",
    "BackendState",
    "KeyState",
    "NodeState",
    "RegionState",
    "RevocationState",
    "SigningKeyState",
    "State",
    "TemplateNameState",
    "TemplateState",
    "from_row",
    "parse",
    "parse_json",
]
