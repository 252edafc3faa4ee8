"""The fleet as placement sees it: candidate regions with health and load, read at most every few
hundred milliseconds and shared by every connect meanwhile."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from control.db import Conn
from control.placement import RegionCandidate
from control.queries import edge_nodes, regions
from sync.timing import NODE_LOST_AFTER_S


@dataclass(frozen=True)
class FleetView:
    """What placement needs: candidate regions with health and load, edge URLs, the default region."""

    candidates: tuple[RegionCandidate, ...]
    edge_urls: dict[str, str]
    oldest_region: str | None


class FleetViewCache:
    """Reads the fleet at most once per `ttl_s`: placement on a view a few hundred ms old is fine
    because the node is chosen again, with its live count, inside the connect transaction."""

    def __init__(self, ttl_s: float = 0.25) -> None:
        self._ttl_s = ttl_s
        self._view: FleetView | None = None
        self._expires = 0.0
        self._loading: asyncio.Future[FleetView] | None = None

    def invalidate(self) -> None:
        self._view = None

    async def get(self, pool: asyncpg.Pool) -> FleetView:
        view = self._view
        if view is not None and time.monotonic() < self._expires:
            return view
        if self._loading is None:  # one read serves every caller waiting for it
            self._loading = asyncio.ensure_future(self._load(pool))
        return await asyncio.shield(self._loading)

    async def _load(self, pool: asyncpg.Pool) -> FleetView:
        try:
            async with pool.acquire() as conn:
                view = await read_fleet(conn)
            self._view, self._expires = view, time.monotonic() + self._ttl_s
            return view
        finally:
            self._loading = None


def _candidate(region: asyncpg.Record, nodes: list[asyncpg.Record]) -> RegionCandidate:
    healthy = [n for n in nodes if n["healthy"]]
    taking = [n for n in healthy if not n["draining"]]  # a draining node takes no new backend
    live = sum(n["live"] for n in nodes)
    capacity = sum(n["capacity"] for n in taking)
    free = sum(max(n["capacity"] - n["live"], 0) for n in taking)
    if region["capacity"] is not None:
        free = min(free, region["capacity"] - live)
        capacity = min(capacity, region["capacity"])
    return RegionCandidate(
        name=region["name"],
        lat=region["lat"],
        lon=region["lon"],
        healthy=bool(healthy),
        free_capacity=free,
        load=live / capacity if capacity > 0 else 1.0,
        draining=bool(healthy) and not taking,
    )


async def read_fleet(conn: Conn) -> FleetView:
    region_rows = await regions.list_all(conn)
    node_rows = await edge_nodes.list_with_load(conn, NODE_LOST_AFTER_S)
    out = [_candidate(r, [n for n in node_rows if n["region"] == r["name"]]) for r in region_rows]
    oldest = min(region_rows, key=lambda r: (r["created_at"], r["name"]))["name"] if region_rows else None
    return FleetView(tuple(out), {r["name"]: r["edge_url"] for r in region_rows}, oldest)
