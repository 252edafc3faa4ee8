"""`connect`: the key's live backend, or a new one placed near the user — in one transaction."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from control.db import Conn
from control.placement import PlacementDecision, PlacementInput, Placer, RegionCandidate
from control.queries import backends, edge_nodes, keys, regions, template_names
from control.services.auth import Caller
from control.services.signing import Keyring
from control.versioning import write_transaction
from sync.errors import ExecutorUnavailable, KeyHeld, NoCapacity, TemplateUnknown
from sync.ids import new_id
from sync.models import BackendStatus, ChangeKind, ConnectRequest, ConnectResponse, PlacementView
from sync.timing import NODE_LOST_AFTER_S


@dataclass(frozen=True)
class ConnectContext:
    """What the router learned about the request beyond its body."""

    caller: Caller
    client_ip: str | None
    arrival_region: str | None
    status_base_url: str
    default_region: str | None
    explain: bool = False


@dataclass(frozen=True)
class _Placed:
    row: asyncpg.Record
    edge_url: str
    spawned: bool
    placement: PlacementView


async def connect(
    pool: asyncpg.Pool,
    placer: Placer,
    fleet_cache: FleetViewCache,
    flights: KeyFlights,
    keyring: Keyring,
    req: ConnectRequest,
    ctx: ConnectContext,
) -> ConnectResponse:
    if req.key is None:
        placed = await _spawn(pool, placer, fleet_cache, req, ctx)
    else:
        placed = await _existing(pool, req) or await flights.run(
            req.key, lambda: _spawn(pool, placer, fleet_cache, req, ctx)
        )
        _check_template(placed.row, req)
    row = placed.row
    token = keyring.issue(row["id"], req.user)
    edge_url = placed.edge_url.rstrip("/")
    return ConnectResponse(
        backend_id=row["id"],
        key=row["key"],
        spawned=placed.spawned,
        status=BackendStatus(row["status"]),
        region=row["region"],
        edge_url=edge_url,
        url=f"{edge_url}/{token}/",
        token=token,
        fencing_token=row["fencing_token"],
        status_url=f"{ctx.status_base_url.rstrip('/')}/v1/backends/{row['id']}",
        placement=placed.placement,
    )


def _existing_placement(row: asyncpg.Record) -> PlacementView:
    return PlacementView(region=row["region"], reason="existing", distance_km=None)


def _check_template(row: asyncpg.Record, req: ConnectRequest) -> None:
    if row["template_name"] != req.template:
        raise KeyHeld(
            f"key {row['key']!r} is held by a backend of template {row['template_name']!r}",
            fields={"key": row["key"], "template": row["template_name"], "backend_id": row["id"]},
        )


async def _existing(pool: asyncpg.Pool, req: ConnectRequest) -> _Placed | None:
    """Read-only fast path: no lock, no write, no version bump."""
    assert req.key is not None
    async with pool.acquire() as conn:
        row = await backends.live_for_key(conn, req.key)
    if row is None:
        return None
    _check_template(row, req)
    return _Placed(row, row["edge_url"], False, _existing_placement(row))


class KeyFlights:
    """Concurrent connects of one new key in this process share one spawn transaction (the
    database's key lock still decides between control-plane processes). Only the caller that
    started the flight is told `spawned`."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[_Placed]] = {}

    async def run(self, key: str, spawn: Callable[[], Awaitable[_Placed]]) -> _Placed:
        flight = self._flights.get(key)
        if flight is not None:
            placed = await asyncio.shield(flight)
            return _Placed(placed.row, placed.edge_url, False, _existing_placement(placed.row))
        flight = self._flights[key] = asyncio.ensure_future(spawn())
        try:
            return await asyncio.shield(flight)
        finally:
            self._flights.pop(key, None)


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


async def read_fleet(conn: Conn) -> FleetView:
    region_rows = await regions.list_all(conn)
    node_rows = await edge_nodes.list_with_load(conn, NODE_LOST_AFTER_S)
    out = []
    for r in region_rows:
        nodes = [n for n in node_rows if n["region"] == r["name"]]
        healthy = [n for n in nodes if n["healthy"]]
        taking = [n for n in healthy if not n["draining"]]  # a draining node takes no new backend
        live = sum(n["live"] for n in nodes)
        capacity = sum(n["capacity"] for n in taking)
        free = sum(max(n["capacity"] - n["live"], 0) for n in taking)
        if r["capacity"] is not None:
            free = min(free, r["capacity"] - live)
            capacity = min(capacity, r["capacity"])
        out.append(
            RegionCandidate(
                name=r["name"],
                lat=r["lat"],
                lon=r["lon"],
                healthy=bool(healthy),
                free_capacity=free,
                load=live / capacity if capacity > 0 else 1.0,
                draining=bool(healthy) and not taking,
            )
        )
    oldest = min(region_rows, key=lambda r: (r["created_at"], r["name"]))["name"] if region_rows else None
    return FleetView(tuple(out), {r["name"]: r["edge_url"] for r in region_rows}, oldest)


def place(placer: Placer, fleet: FleetView, req: ConnectRequest, ctx: ConnectContext) -> PlacementDecision:
    return placer.place(
        PlacementInput(
            pinned_region=req.region,
            location=(req.location.lat, req.location.lon) if req.location else None,
            client_ip=ctx.client_ip,
            arrival_region=ctx.arrival_region,
            default_region=ctx.default_region or fleet.oldest_region,
        ),
        fleet.candidates,
    )


async def _spawn(
    pool: asyncpg.Pool, placer: Placer, fleet_cache: FleetViewCache, req: ConnectRequest, ctx: ConnectContext
) -> _Placed:
    try:
        return await _spawn_once(pool, placer, await fleet_cache.get(pool), req, ctx)
    except NoCapacity:
        # The cached view may be stale (a node just filled up or died): decide once more on a fresh one.
        fleet_cache.invalidate()
        return await _spawn_once(pool, placer, await fleet_cache.get(pool), req, ctx)


async def _refuse_missing_executor(conn: Conn, region: str, executor: str, template: str) -> None:
    """A region whose healthy nodes all lack the template's executor refuses it (rather than
    leaving a backend `scheduled` on a node that cannot start it)."""
    healthy, running = await edge_nodes.healthy_and_running(conn, region, NODE_LOST_AFTER_S, executor)
    if healthy and not running:
        raise ExecutorUnavailable(
            f"template {template!r} needs the {executor!r} executor, which no edge node of region {region!r} runs",
            fields={"template": template, "executor": executor, "region": region},
        )


async def _spawn_once(
    pool: asyncpg.Pool, placer: Placer, fleet: FleetView, req: ConnectRequest, ctx: ConnectContext
) -> _Placed:
    async with write_transaction(pool) as tx:
        conn = tx.conn
        template = await template_names.get(conn, req.template)
        if template is None:
            raise TemplateUnknown(f"no template named {req.template!r}", fields={"template": req.template})
        fencing_token = 1
        if req.key is not None:
            key_row = await keys.lock(conn, req.key)
            # Another connect may have created the backend while we waited for the row lock.
            live = await backends.live_for_key(conn, req.key)
            if live is not None:
                _check_template(live, req)
                return _Placed(live, live["edge_url"], False, _existing_placement(live))
            fencing_token = key_row["fencing_token"] + 1
        decision = place(placer, fleet, req, ctx)
        executor = template["spec"]["executor"]
        node = await edge_nodes.least_loaded_in_region(conn, decision.region, NODE_LOST_AFTER_S, executor)
        if node is None:
            await _refuse_missing_executor(conn, decision.region, executor, req.template)
            raise NoCapacity(f"region {decision.region!r} has no edge node with free capacity")
        row = await backends.insert(
            conn,
            backend_id=new_id("bk"),
            key=req.key,
            template_name=req.template,
            template_id=template["id"],
            region=decision.region,
            node_id=node["id"],
            fencing_token=fencing_token,
            owner_token_id=ctx.caller.token_id,
            user_id=req.user,
            secret=secrets.token_urlsafe(24),
        )
        tx.upsert(ChangeKind.BACKEND, row["id"], row)
        if req.key is not None:
            tx.upsert(ChangeKind.KEY, req.key, await keys.assign(conn, req.key, row["id"], fencing_token))
    return _Placed(
        row,
        fleet.edge_urls[decision.region],
        True,
        PlacementView(**decision.to_wire(ranking_limit=None if ctx.explain else 0)),
    )
