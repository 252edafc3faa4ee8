"""Control-plane settings: one env prefix (`MERIDIAN_`), nested groups, a description per field.

Nested fields read from e.g. `MERIDIAN_DATABASE__URL`; the most used ones also have the flat
aliases documented in the README (`MERIDIAN_DATABASE_URL`, `MERIDIAN_ADMIN_TOKEN`, `MERIDIAN_GEOIP_DB`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL is started in `data_dir/postgres`.",
    )
    pool_min: int = Field(default=2, ge=1, description="Connections the pool keeps open.")
    pool_max: int = Field(default=20, ge=1, description="Most connections the pool opens.")
    command_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one SQL statement.")


class SyncSettings(BaseModel):
    changes_page_limit: int = Field(default=5000, ge=1, description="Most change rows in one reply.")
    snapshot_page_size: int = Field(default=2000, ge=1, description="Rows read per snapshot page.")
    max_concurrent_snapshots: int = Field(
        default=4, ge=1, description="Snapshots served at once; more are refused with 429."
    )
    compaction_keep_versions: int = Field(
        default=100_000, ge=0, description="Versions of change log kept at least (count bound)."
    )
    compaction_keep_s: float = Field(
        default=24 * 3600.0, ge=0, description="Age of change log kept at least (age bound), seconds."
    )
    compaction_interval_s: float = Field(default=60.0, gt=0, description="How often compaction runs.")


class PlacementSettings(BaseModel):
    default_region: str | None = Field(default=None, description="Region used when no other signal places a backend.")
    geoip_db: Path | None = Field(
        default=None, description="GeoIP2/GeoLite2/DB-IP City `.mmdb` file for client-IP placement."
    )


class ControlSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MERIDIAN_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8700, ge=0, le=65535, description="Port the HTTP server binds.")
    data_dir: Path = Field(default=Path(".meridian/control"), description="Directory for local state.")
    public_url: str | None = Field(
        default=None, description="URL clients reach this control plane at (for status URLs)."
    )
    admin_token: str | None = Field(
        default=None,
        min_length=16,
        description="Bootstrap admin API token, ensured at start (stored hashed).",
    )
    trusted_proxies: str | None = Field(
        default=None,
        description="Comma-separated IPs of load balancers whose X-Forwarded-For names the caller's "
        "address. Unset: the TCP peer is the caller (edges still forward user IPs with edge tokens).",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest accepted request body.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("database_url", "MERIDIAN_DATABASE_URL"),
        description="Flat alias of database.url.",
    )
    geoip_db: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("geoip_db", "MERIDIAN_GEOIP_DB"),
        description="Flat alias of placement.geoip_db.",
    )

    def effective_database_url(self) -> str | None:
        return self.database.url or self.database_url

    def effective_geoip_db(self) -> Path | None:
        return self.placement.geoip_db or self.geoip_db
