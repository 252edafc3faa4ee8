"""The typed answers of the Meridian API, as the Python client returns them.

Plain frozen dataclasses built from the JSON leniently: a newer server may add fields (they stay in
`raw`), and nothing here imports the server's packages (no pydantic), so the client installs with
httpx alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["scheduled", "starting", "ready", "draining", "terminated"]
LIVE_STATUSES: frozenset[str] = frozenset({"scheduled", "starting", "ready"})


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Placement:
    region: str
    reason: str
    distance_km: float | None = None
    ranking: list[dict[str, Any]] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Placement:
        return cls(str(d["region"]), str(d["reason"]), d.get("distance_km"), d.get("ranking"))


@dataclass(frozen=True)
class Connection:
    """What `connect` answers: the key's backend and a signed URL to reach it through an edge."""

    backend_id: str
    key: str | None
    spawned: bool
    status: Status
    region: str
    edge_url: str
    url: str
    token: str = field(repr=False)
    fencing_token: int
    status_url: str
    placement: Placement
    base_path: str | None = None
    subdomain_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Connection:
        return cls(
            backend_id=str(d["backend_id"]),
            key=_opt_str(d.get("key")),
            spawned=bool(d["spawned"]),
            status=d["status"],
            region=str(d["region"]),
            edge_url=str(d["edge_url"]),
            url=str(d["url"]),
            token=str(d["token"]),
            fencing_token=int(d["fencing_token"]),
            status_url=str(d["status_url"]),
            placement=Placement.from_json(d["placement"]),
            base_path=_opt_str(d.get("base_path")),
            subdomain_url=_opt_str(d.get("subdomain_url")),
            raw=d,
        )

    @property
    def websocket_url(self) -> str:
        """`url` with the ws/wss scheme, for a WebSocket to the backend's root."""
        return "ws" + self.url[4:] if self.url.startswith("http") else self.url


@dataclass(frozen=True)
class Backend:
    id: str
    key: str | None
    template: str
    region: str
    node: str
    status: Status
    fencing_token: int
    created_at: datetime | None = None
    status_changed_at: datetime | None = None
    termination_reason: str | None = None
    exit_code: int | None = None
    address: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Backend:
        return cls(
            id=str(d["id"]),
            key=_opt_str(d.get("key")),
            template=str(d.get("template", "")),
            region=str(d.get("region", "")),
            node=str(d.get("node", "")),
            status=d["status"],
            fencing_token=int(d.get("fencing_token", 0)),
            created_at=_time(d.get("created_at")),
            status_changed_at=_time(d.get("status_changed_at")),
            termination_reason=_opt_str(d.get("termination_reason")),
            exit_code=d.get("exit_code"),
            address=_opt_str(d.get("address")),
            raw=d,
        )

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES


@dataclass(frozen=True)
class StatusEvent:
    """One event of a backend's status stream; `id` is what `Last-Event-ID` resumes from."""

    id: int
    backend_id: str
    status: Status
    reason: str | None
    at: datetime | None

    @classmethod
    def from_json(cls, event_id: int, d: dict[str, Any]) -> StatusEvent:
        return cls(event_id, str(d["backend_id"]), d["status"], _opt_str(d.get("reason")), _time(d.get("at")))


@dataclass(frozen=True)
class Node:
    id: str
    healthy: bool
    backends: int
    capacity: int
    applied_version: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        return cls(str(d["id"]), bool(d["healthy"]), int(d["backends"]), int(d["capacity"]), int(d["applied_version"]))


@dataclass(frozen=True)
class Region:
    name: str
    lat: float
    lon: float
    edge_url: str
    capacity: int | None = None
    nodes: tuple[Node, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Region:
        nodes = tuple(Node.from_json(n) for n in d.get("nodes") or ())
        return cls(str(d["name"]), float(d["lat"]), float(d["lon"]), str(d["edge_url"]), d.get("capacity"), nodes, d)


@dataclass(frozen=True)
class Template:
    name: str
    id: str
    spec: dict[str, Any]
    updated_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Template:
        return cls(str(d["name"]), str(d["id"]), dict(d.get("spec") or {}), _time(d.get("updated_at")), d)


@dataclass(frozen=True)
class ApiToken:
    """A new API token: `token` is shown once, at creation."""

    id: str
    name: str
    scopes: tuple[str, ...]
    token: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ApiToken:
        return cls(str(d["id"]), str(d["name"]), tuple(d.get("scopes") or ()), _opt_str(d.get("token")), d)
