"""Edge-node settings: one env prefix (`MERIDIAN_EDGE_`), a description per field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync.discovery import ControlEndpoints, endpoints_for
from sync.timing import KEEPALIVE_IDLE_S, REQUEST_HEAD_TIMEOUT_S
from sync.validation import DomainName


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_EDGE_", extra="ignore", validate_assignment=True)

    region: str = Field(description="Region this edge serves (a known name creates the region on first heartbeat).")
    control_url: str = Field(
        description="The control plane: http(s)://HOST[:PORT], or dns+srv://NAME[?scheme=https] to find "
        "it by DNS SRV records (e.g. dns+srv://_meridian-control._tcp.example.com.), failing over "
        "across them."
    )
    shutdown_drain_s: float = Field(
        default=0.0,
        ge=0,
        description="On SIGTERM, drain first: tell the control plane to place nothing here, stop idle "
        "backends, and wait up to this long for busy ones (open WebSockets) before stopping the rest. "
        "0: stop at once. Keep it below the supervisor's kill timeout.",
    )
    on_exit: Literal["stop", "keep"] = Field(
        default="stop",
        description="What a clean exit (SIGTERM, SIGINT) does with this node's backends: `stop` them "
        "(reported stopped, keys free at once), or `keep` them running for the next edge process on "
        "this data directory to adopt (upgrades, restarts; no drain). SIGUSR2 exits keeping them "
        "whatever this says.",
    )
    dns_nameservers: list[str] | None = Field(
        default=None,
        description="DNS servers (IP or IP:PORT) for dns+srv:// control URLs; default: the system's.",
    )
    token: str = Field(description="API token with the `edge` scope.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8701, ge=0, le=65535, description="Port the HTTP server binds.")
    data_dir: Path = Field(default=Path(".meridian/edge"), description="Replica cache, node id, backend logs.")
    capacity: int = Field(default=100, ge=0, description="Most live backends this node runs.")
    public_url: str | None = Field(default=None, description="URL users reach this edge at; default http://HOST:PORT.")
    internal_url: str | None = Field(
        default=None, description="URL other edges reach this one at (sent in heartbeats); default http://HOST:PORT."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call this edge's /v1/connect (CORS)."
    )
    edge_domain: DomainName | None = Field(
        default=None, description="Domain for subdomain routing: <backend-id>.<edge_domain>."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Peers (load balancers) whose X-Forwarded-* headers the edge appends to, not replaces.",
    )
    max_body_bytes: int = Field(
        default=10 << 20, ge=1024, description="Largest proxied request body (a template may allow more)."
    )
    head_timeout_s: float = Field(
        default=REQUEST_HEAD_TIMEOUT_S, gt=0, description="A client's request head must be complete within this."
    )
    keepalive_timeout_s: float = Field(
        default=KEEPALIVE_IDLE_S, gt=0, description="An idle kept-alive client connection is closed after this."
    )
    max_client_connections: int = Field(
        default=20_000, ge=1, description="Most open client connections (WebSockets included); more get 503."
    )
    ready_wait_s: float = Field(
        default=30.0, gt=0, description="How long a request waits for a starting backend before 503."
    )
    stop_grace_s: float = Field(default=5.0, gt=0, description="SIGTERM → SIGKILL grace for backends.")
    idle_check_s: float = Field(default=1.0, gt=0, description="How often idle and lifetime limits are checked.")
    # The Nomad executor: on when an address is set (also read from Nomad's own NOMAD_* variables).
    nomad_addr: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+/?$",
        validation_alias=AliasChoices("nomad_addr", "MERIDIAN_EDGE_NOMAD_ADDR", "NOMAD_ADDR"),
        description="Nomad HTTP API address; when set, `executor: nomad` templates run as Nomad jobs.",
    )
    nomad_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("nomad_token", "MERIDIAN_EDGE_NOMAD_TOKEN", "NOMAD_TOKEN"),
        description="Nomad ACL token (X-Nomad-Token); never logged.",
    )
    nomad_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("nomad_namespace", "MERIDIAN_EDGE_NOMAD_NAMESPACE", "NOMAD_NAMESPACE"),
        description="Nomad namespace of the backends' jobs.",
    )
    nomad_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("nomad_region", "MERIDIAN_EDGE_NOMAD_REGION", "NOMAD_REGION"),
        description="Nomad region the jobs are registered in (Nomad's own, not Meridian's region).",
    )
    # Backend logs (every executor).
    log_max_bytes: int = Field(
        default=4 << 20, ge=4096, description="Size of a backend's current log file before it is rotated."
    )
    log_backups: int = Field(default=1, ge=0, le=20, description="Rotated log files kept per backend.")
    log_keep_s: float = Field(
        default=3600.0, ge=0, description="How long a backend's logs are kept after it ended, then removed."
    )

    @field_validator("control_url")
    @classmethod
    def _control_url_has_a_known_form(cls, value: str) -> str:
        endpoints_for(value)  # raises ValueError, which names what is wrong
        return value.rstrip("/")

    def control_endpoints(self) -> ControlEndpoints:
        return endpoints_for(self.control_url, nameservers=self.dns_nameservers)

    def effective_public_url(self, bound_port: int) -> str:
        return (self.public_url or f"http://{self.host}:{bound_port}").rstrip("/")

    def effective_internal_url(self, bound_port: int) -> str:
        return (self.internal_url or f"http://{self.host}:{bound_port}").rstrip("/")

    def node_id(self) -> str:
        """A node id stable across restarts, kept in the data directory."""
        from sync.ids import new_id

        path = self.data_dir / "node_id"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        node_id = new_id("nd")
        path.write_text(node_id)
        return node_id
