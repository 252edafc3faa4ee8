"""Fleet gauges of the control plane, read from PostgreSQL: backends by state and region, edge
nodes by health, the system version, and each healthy node's sync lag.

The lag is measured from what nodes report in their heartbeats (`applied_version`), so it reads up
to one heartbeat interval high: a node that applied a version 30 ms after its commit still shows
that version as pending until its next heartbeat.

The gauges are observed synchronously (OTel callbacks), so the numbers are read beforehand: at each
`/metrics` scrape and, when metrics are exported over OTLP, every export interval. A database that
does not answer within `METRICS_READ_TIMEOUT_S` leaves the previous numbers in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from control.db import TRANSIENT_ERRORS, Conn
from sync.timing import METRICS_READ_TIMEOUT_S, NODE_LOST_AFTER_S

log = logging.getLogger(__name__)

_REFRESH_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)

_BACKENDS = """
SELECT region, status, count(*) AS n FROM backends WHERE status <> 'terminated' GROUP BY region, status
"""
_NODES = """
SELECT n.id, n.region,
       n.last_heartbeat_at > now() - make_interval(secs => $1) AS healthy,
       greatest(v.version - n.applied_version, 0) AS lag_versions,
       coalesce(extract(epoch FROM now() - (
           SELECT c.created_at FROM changes c WHERE c.version > n.applied_version ORDER BY c.version LIMIT 1
       )), 0)::float8 AS lag_seconds
FROM edge_nodes n CROSS JOIN system_version v
"""
_VERSION = "SELECT version FROM system_version"


@dataclass
class FleetSample:
    backends: list[tuple[str, str, int]] = field(default_factory=list)
    nodes: list[asyncpg.Record] = field(default_factory=list)
    version: int | None = None
    taken_at: float | None = None


async def read_sample(conn: Conn) -> FleetSample:
    backends = [(r["region"], r["status"], r["n"]) for r in await conn.fetch(_BACKENDS)]
    nodes = await conn.fetch(_NODES, NODE_LOST_AFTER_S)
    return FleetSample(backends, list(nodes), await conn.fetchval(_VERSION), time.monotonic())


class FleetGauges:
    def __init__(self, meter: Meter) -> None:
        self.sample = FleetSample()
        self._refreshing: asyncio.Future[None] | None = None
        meter.create_observable_gauge(
            "meridian.backends",
            callbacks=[self._backends],
            unit="{backend}",
            description="Backends that are not terminated, by state and region (control plane's view).",
        )
        meter.create_observable_gauge(
            "meridian.edge_nodes",
            callbacks=[self._nodes],
            unit="{node}",
            description="Registered edge nodes by region and health.",
        )
        meter.create_observable_gauge(
            "meridian.sync.version", callbacks=[self._version], unit="{version}", description="System version."
        )
        meter.create_observable_gauge(
            "meridian.sync.lag.versions",
            callbacks=[self._lag_versions],
            unit="{version}",
            description="Versions committed that a healthy node has not reported applying.",
        )
        meter.create_observable_gauge(
            "meridian.sync.lag.seconds",
            callbacks=[self._lag_seconds],
            unit="s",
            description="Age of the oldest change a healthy node has not reported applying (0 when current).",
        )

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read fresh numbers (one read shared by concurrent scrapes); keep the old ones on failure."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh(pool))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, pool: asyncpg.Pool) -> None:
        try:
            async with asyncio.timeout(METRICS_READ_TIMEOUT_S), pool.acquire() as conn:
                self.sample = await read_sample(conn)
        except _REFRESH_ERRORS as exc:
            log.debug("fleet gauges not refreshed: %s", type(exc).__name__)
        finally:
            self._refreshing = None

    # ---- callbacks (no I/O: they read the last sample) ---------------------------------------

    def _backends(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"region": region, "state": status}) for region, status, n in self.sample.backends]

    def _nodes(self, _: CallbackOptions) -> Iterable[Observation]:
        counts: dict[tuple[str, bool], int] = {}
        for node in self.sample.nodes:
            counts[(node["region"], node["healthy"])] = counts.get((node["region"], node["healthy"]), 0) + 1
        return [Observation(n, {"region": r, "healthy": str(h).lower()}) for (r, h), n in counts.items()]

    def _version(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self.sample.version is None else [Observation(self.sample.version)]

    def _healthy(self) -> list[asyncpg.Record]:
        return [n for n in self.sample.nodes if n["healthy"]]

    def _lag_versions(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n["lag_versions"], {"node": n["id"], "region": n["region"]}) for n in self._healthy()]

    def _lag_seconds(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n["lag_seconds"], {"node": n["id"], "region": n["region"]}) for n in self._healthy()]
