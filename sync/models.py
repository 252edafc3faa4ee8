"""Wire models of the public API and of the sync protocol.

Inputs refuse unknown fields (`extra="forbid"`); outputs are plain models that clients parse
leniently enough to survive a newer server adding fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, model_validator

from sync.validation import DomainName, HttpUrl, Int32, Key, NonNegativeInt63, ProcessText, Text, UrlPath

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class BackendStatus(StrEnum):
    SCHEDULED = "scheduled"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    TERMINATED = "terminated"

    @property
    def rank(self) -> int:
        return _STATUS_ORDER.index(self)

    @property
    def is_live(self) -> bool:
        """Live backends hold their key; draining and terminated ones do not."""
        return self in (BackendStatus.SCHEDULED, BackendStatus.STARTING, BackendStatus.READY)


_STATUS_ORDER = list(BackendStatus)


class TerminationReason(StrEnum):
    IDLE = "idle"
    LIFETIME = "lifetime"
    REQUESTED = "requested"
    FAILED = "failed"
    LOST = "lost"
    SUPERSEDED = "superseded"


class Scope(StrEnum):
    ADMIN = "admin"
    CLIENT = "client"
    EDGE = "edge"
    OBSERVER = "observer"  # read-only: regions, nodes, backends, templates, placement preview


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Url = HttpUrl
User = Annotated[Text, Field(max_length=256)]
"""The user a connection token is for; it travels in the proxied `x-meridian-user` header."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=65536)


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- regions --------------------------------------------------------------------------------


class RegionIn(Strict):
    lat: Latitude
    lon: Longitude
    edge_url: Url
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)


class NodeView(Wire):
    id: str
    healthy: bool
    backends: int
    capacity: int
    applied_version: int
    address: str
    last_heartbeat_at: datetime | None = None
    draining: bool = False


class RegionView(Wire):
    name: str
    lat: float
    lon: float
    edge_url: str
    capacity: int | None = None
    nodes: list[NodeView] = []


# ---- templates ------------------------------------------------------------------------------


ExecutorKind = Literal["process", "nomad"]


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class FromEdgeEnv(Strict):
    """A template env value read from the edge's own environment when the backend starts, so the
    secret lives on the edge only (edge/template_env.py)."""

    from_edge_env: EnvName


MAX_WARM_POOL = 1000
"""Most pool members a template may ask each node to keep (the node's capacity bounds it too)."""


class TemplateSpec(Strict):
    executor: ExecutorKind
    argv: list[Annotated[ProcessText, Field(max_length=4096)]] | None = Field(default=None, max_length=256)
    image: Annotated[Text, Field(max_length=1024)] | None = None
    env: dict[EnvName, ProcessText | FromEdgeEnv] = Field(default_factory=dict, max_length=256)
    idle_timeout_s: int = Field(default=300, ge=1, le=7 * 86400)
    lifetime_limit_s: int | None = Field(default=None, ge=1, le=30 * 86400)
    start_timeout_s: int = Field(default=30, ge=1, le=3600)
    ready_path: Annotated[Text, Field(pattern=r"^/[^\s]*$", max_length=1024)] = "/"
    memory_mb: int | None = Field(default=None, ge=16, le=1_048_576)
    cpu_mhz: int | None = Field(default=None, ge=10, le=1_000_000)
    strip_prefix: bool = Field(
        default=True,
        description="Path routing: the backend sees paths without its base path (False: with it, "
        "for apps configured with MERIDIAN_BASE_PATH).",
    )
    max_body_bytes: int | None = Field(
        default=None, ge=1024, le=1 << 36, description="Largest request body for this template's backends."
    )
    warm_pool: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=MAX_WARM_POOL,
        description="Started, unclaimed backends each edge node keeps of this template (per node; process "
        "executor only; needs claim_path). A new key's backend claims one instead of starting.",
    )
    claim_path: UrlPath | None = Field(
        default=None,
        description="Where the edge POSTs a pooled backend's identity (key, backend id, fencing token, user) "
        "when a new key claims it; a 2xx answer claims it.",
    )

    @model_validator(mode="after")
    def _executor_needs(self) -> TemplateSpec:
        if self.executor == "process" and not self.argv:
            raise ValueError("a process template needs a non-empty argv")
        if self.executor == "nomad" and not (self.image or self.argv):
            raise ValueError("a nomad template needs an image (docker) or an argv (raw_exec)")
        if self.warm_pool and (self.executor != "process" or self.claim_path is None):
            raise ValueError("warm_pool needs the process executor and a claim_path")
        return self


class TemplateLimits(Wire):
    idle_timeout_s: int
    lifetime_limit_s: int | None = None
    start_timeout_s: int
    memory_mb: int | None = None
    cpu_mhz: int | None = None


class TemplateView(Wire):
    """`spec` (argv, env, image: possibly secrets) is shown to admin tokens only; everyone else sees
    the name, id, executor and limits."""

    name: str
    id: str
    executor: str
    limits: TemplateLimits
    spec: TemplateSpec | None = None
    updated_at: datetime


# ---- connect --------------------------------------------------------------------------------


class Location(Strict):
    lat: Latitude
    lon: Longitude


class ConnectRequest(Strict):
    key: Key | None = None
    template: Name
    region: Name | None = None
    location: Location | None = None
    client_ip: Annotated[Text, Field(max_length=64)] | None = None
    user: User | None = None
    auth: dict[str, Any] | None = None


class PlacementView(Wire):
    region: str
    reason: str
    distance_km: float | None = None
    ranking: list[dict[str, Any]] | None = None


class PlacementPreviewRequest(Strict):
    """Where would `connect` place a new backend for a user here? Nothing is spawned."""

    location: Location | None = None
    client_ip: str | None = Field(default=None, max_length=64)
    template: Name | None = None


class PlacementPreview(PlacementView):
    origin: Location | None = None  # the point distances were measured from, when there is one


class ConnectResponse(Wire):
    backend_id: str
    key: str | None
    spawned: bool
    status: BackendStatus
    region: str
    edge_url: str
    url: str
    token: str
    fencing_token: int
    status_url: str
    placement: PlacementView
    base_path: str | None = None  # the backend's stable path prefix on an edge (path routing)
    subdomain_url: str | None = None  # when the answering edge has an edge domain
    assignment: dict[str, Any] | None = Field(
        default=None,
        description="Edge callers only, for a backend this connect created: its record as sync will carry it, "
        "so the edge it was placed on starts it at once instead of waiting for the change feed. An edge "
        "never passes it on.",
    )


# ---- backends -------------------------------------------------------------------------------


class BackendView(Wire):
    id: str
    key: str | None
    template: str
    template_id: str
    region: str
    node: str
    address: str | None = None
    status: BackendStatus
    fencing_token: int
    created_at: datetime
    status_changed_at: datetime
    termination_reason: TerminationReason | None = None
    exit_code: int | None = None


class TerminateRequest(Strict):
    hard: bool = False


class RevokeRequest(Strict):
    user: User | None = None


class StatusReport(Strict):
    """An edge's report of one backend's state (heartbeat entry, or a direct status call)."""

    id: Annotated[Text, Field(max_length=64)]
    status: BackendStatus
    address: Annotated[Text, Field(max_length=256)] | None = None
    termination_reason: TerminationReason | None = None
    exit_code: Int32 | None = None


class StatusReportResult(Wire):
    id: str
    accepted: bool
    status: BackendStatus | None = None


# ---- edge nodes -----------------------------------------------------------------------------


class HeartbeatIn(Strict):
    node_id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    region: Name
    address: Url
    capacity: int = Field(ge=0, le=1_000_000)
    applied_version: NonNegativeInt63
    edge_url: Url | None = None
    backends: list[StatusReport] = Field(default_factory=list, max_length=100_000)
    shutting_down: StrictBool = False
    """The edge is draining itself before it exits: give it no new backends."""
    executors: list[ExecutorKind] | None = Field(
        default=None, max_length=8, description="Executors the edge runs; None (an older edge): process only."
    )
    unhealthy_reason: str | None = Field(
        default=None, max_length=500, description="Set when the edge cannot serve (e.g. its replica is unusable)."
    )
    warm_pools: dict[Annotated[str, Field(max_length=128)], Annotated[int, Field(ge=0, le=MAX_WARM_POOL)]] = Field(
        default_factory=dict,
        max_length=1024,
        description="Ready, unclaimed warm-pool members by template id: placement's tie-break between equally "
        "loaded nodes.",
    )
    edge_domain: DomainName | None = Field(
        default=None, description="The edge's domain for subdomain routing, so connect can answer `subdomain_url`."
    )
    enrol: StrictBool = False
    """Sent with an unbound edge token: bind a new token to this node and return it (`node_token`),
    if no token is bound to the node yet. Ignored with a bound (or admin) token."""


NODE_ID_PATTERN = r"^nd-[A-Za-z0-9_-]{1,60}$"


class DrainRequest(Strict):
    draining: StrictBool = True
    """False ends the drain: the node takes new backends again."""


class NodeDrainView(Wire):
    """A node's drain state: what an operator polls until `empty` before upgrading the node."""

    id: str
    region: str
    draining: bool
    drain_requested_at: datetime | None = None
    backends: int
    """Live backends still on the node (scheduled, starting, ready)."""
    stopping: int
    """Backends on the node still shutting down (status draining)."""
    empty: bool
    """No backend runs on the node any more: it can be stopped without cutting anyone off."""


class HeartbeatOut(Wire):
    node_id: str
    version: int | None = Field(default=None, description="Version of the changes this heartbeat made.")
    backends: list[StatusReportResult]
    draining: bool = Field(default=False, description="The node is being drained: it stops its idle backends.")
    node_token: str | None = Field(
        default=None,
        description="Answer to `enrol`: the secret of a token bound to this node, shown once. From now on only "
        "a token bound to the node speaks for it.",
    )


# ---- API tokens -----------------------------------------------------------------------------


class TokenIn(Strict):
    """A new API token. `key_prefix`, `user` and `templates` confine a client token (see
    sync/confinement.py); a token minted by a non-admin is confined at least as narrowly as its minter."""

    name: Annotated[Text, Field(min_length=1, max_length=128)]
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    key_prefix: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    user: User | None = None
    templates: list[Name] | None = Field(default=None, min_length=1, max_length=256)
    expires_at: AwareDatetime | None = None
    node_id: Annotated[str, Field(pattern=NODE_ID_PATTERN)] | None = None
    """Bind an edge token to one node: it heartbeats, reports and replays only for that node."""

    @model_validator(mode="after")
    def _only_clients_are_confined(self) -> TokenIn:
        confined = self.key_prefix is not None or self.user is not None or self.templates is not None
        if confined and set(self.scopes) != {Scope.CLIENT}:
            raise ValueError("key_prefix, user and templates confine client tokens only (scopes: [client])")
        if self.node_id is not None and set(self.scopes) != {Scope.EDGE}:
            raise ValueError("node_id binds edge tokens only (scopes: [edge])")
        return self


class TokenView(Wire):
    id: str
    name: str
    scopes: list[Scope]
    key_prefix: str | None = None
    user: str | None = None
    templates: list[str] | None = None
    node_id: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    token: str | None = Field(default=None, description="The secret, shown once, when the token is created.")
    created_at: datetime


# ---- health and sync ------------------------------------------------------------------------


class Health(Wire):
    status: str
    version: int


class ChangeKind(StrEnum):
    REGION = "region"
    NODE = "node"
    TEMPLATE = "template"
    TEMPLATE_NAME = "template_name"
    BACKEND = "backend"
    KEY = "key"
    SIGNING_KEY = "signing_key"
    REVOCATION = "revocation"
    API_TOKEN = "api_token"


class ChangeOp(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


class Change(Wire):
    version: int
    kind: ChangeKind
    id: str
    op: ChangeOp
    body: dict[str, Any] | None = None


class ChangesReply(Wire):
    epoch: str
    from_: int = Field(alias="from")
    to: int
    changes: list[Change]
    more: bool

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ErrorBody(Wire):
    code: str
    message: str
    fields: dict[str, Any] = {}
