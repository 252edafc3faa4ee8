"""`connect`: the key's live backend, or a new one placed near the user — in one transaction."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import asyncpg

from control.db import Conn
from control.placement import PlacementDecision, PlacementInput, Placer
from control.queries import backends, edge_nodes, keys, template_names
from control.services.auth import Caller
from control.services.fleet import FleetView, FleetViewCache
from control.services.signing import Keyring
from control.singleflight import SingleFlight
from control.versioning import write_transaction
from sync.errors import ExecutorUnavailable, KeyHeld, NoCapacity, TemplateUnknown
from sync.ids import new_id
from sync.models import BackendStatus, ChangeKind, ConnectRequest, ConnectResponse, PlacementView
from sync.routing import base_path, subdomain_url
from sync.state import BackendState, from_row
from sync.telemetry import with_trace_context
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
    for_edge: bool = False
    """The request came through an edge: a new backend's record goes in the answer (the fast route)."""


@dataclass(frozen=True)
class Placed:
    """The backend a connect answers with, and how it came to be."""

    row: asyncpg.Record
    edge_url: str
    spawned: bool
    placement: PlacementView
    edge_domain: str | None = None
    """The domain the backend's node serves subdomain routing under (from its heartbeats)."""


@dataclass
class ConnectDeps:
    """What connect needs that lives for the whole process."""

    pool: asyncpg.Pool
    placer: Placer
    keyring: Keyring
    fleet: FleetViewCache = field(default_factory=FleetViewCache)
    # Concurrent connects of one new key in this process share one spawn transaction (the
    # database's key lock still decides between control-plane processes).
    flights: SingleFlight[Placed] = field(default_factory=SingleFlight)


async def connect(deps: ConnectDeps, req: ConnectRequest, ctx: ConnectContext) -> ConnectResponse:
    """Within the caller's confinement (sync/confinement.py): its key prefix, templates and user."""
    user = ctx.caller.confinement.connect_user(req.key, req.template, req.user)
    if user != req.user:
        req = req.model_copy(update={"user": user})
    try:
        placed = await _find_or_spawn(deps, req, ctx)
    except KeyHeld as exc:
        if ctx.caller.controls_every_backend:
            raise
        # The holder may be outside the caller's templates: name neither it nor its template.
        raise KeyHeld("the key is held by a backend of another template", fields={"key": req.key}) from exc
    return _answer(deps.keyring, placed, req, ctx)


async def _find_or_spawn(deps: ConnectDeps, req: ConnectRequest, ctx: ConnectContext) -> Placed:
    if req.key is None:
        return await _spawn(deps, req, ctx)
    placed = await _live(deps.pool, req) or await _spawn_key_once(deps, req.key, req, ctx)
    _check_template(placed.row, req)
    return placed


def _answer(keyring: Keyring, placed: Placed, req: ConnectRequest, ctx: ConnectContext) -> ConnectResponse:
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
        base_path=base_path(row["id"]),
        subdomain_url=subdomain_url(edge_url, placed.edge_domain, row["id"], token),
        assignment=with_trace_context(from_row(BackendState, row).body()) if ctx.for_edge and placed.spawned else None,
    )


def _existing(row: asyncpg.Record, edge_url: str | None = None, edge_domain: str | None = None) -> Placed:
    """`row` from live_for_key (with the edge URL and domain), or a spawn's row with both given."""
    placement = PlacementView(region=row["region"], reason="existing", distance_km=None)
    if edge_url is None:
        edge_url, edge_domain = row["edge_url"], row["edge_domain"]
    return Placed(row, edge_url, False, placement, edge_domain)


def _check_template(row: asyncpg.Record, req: ConnectRequest) -> None:
    if row["template_name"] != req.template:
        raise KeyHeld(
            f"key {row['key']!r} is held by a backend of template {row['template_name']!r}",
            fields={"key": row["key"], "template": row["template_name"], "backend_id": row["id"]},
        )


async def _live(pool: asyncpg.Pool, req: ConnectRequest) -> Placed | None:
    """Read-only fast path: no lock, no write, no version bump."""
    assert req.key is not None
    async with pool.acquire() as conn:
        row = await backends.live_for_key(conn, req.key)
    if row is None:
        return None
    _check_template(row, req)
    return _existing(row)


async def _spawn_key_once(deps: ConnectDeps, key: str, req: ConnectRequest, ctx: ConnectContext) -> Placed:
    """Only the caller that started the flight is told `spawned`."""
    placed, leader = await deps.flights.run(key, lambda: _spawn(deps, req, ctx))
    return placed if leader else _existing(placed.row, placed.edge_url, placed.edge_domain)


async def _spawn(deps: ConnectDeps, req: ConnectRequest, ctx: ConnectContext) -> Placed:
    try:
        return await _spawn_transaction(deps.pool, deps.placer, await deps.fleet.get(deps.pool), req, ctx)
    except NoCapacity:
        # The cached view may be stale (a node just filled up or died): decide once more on a fresh one.
        deps.fleet.invalidate()
        return await _spawn_transaction(deps.pool, deps.placer, await deps.fleet.get(deps.pool), req, ctx)


def _place(placer: Placer, fleet: FleetView, req: ConnectRequest, ctx: ConnectContext) -> PlacementDecision:
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


async def _refuse_missing_executor(conn: Conn, region: str, executor: str, template: str) -> None:
    """A region whose healthy nodes all lack the template's executor refuses it (rather than
    leaving a backend `scheduled` on a node that cannot start it)."""
    healthy, running = await edge_nodes.healthy_and_running(conn, region, NODE_LOST_AFTER_S, executor)
    if healthy and not running:
        raise ExecutorUnavailable(
            f"template {template!r} needs the {executor!r} executor, which no edge node of region {region!r} runs",
            fields={"template": template, "executor": executor, "region": region},
        )


async def _spawn_transaction(
    pool: asyncpg.Pool, placer: Placer, fleet: FleetView, req: ConnectRequest, ctx: ConnectContext
) -> Placed:
    """The one write of connect: lock the key, find its live backend or insert one on the least
    loaded node of the chosen region, bump its fencing token, and record both changes."""
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
                return _existing(live)
            fencing_token = key_row["fencing_token"] + 1
        decision = _place(placer, fleet, req, ctx)
        executor = template["spec"]["executor"]
        node = await edge_nodes.least_loaded_in_region(
            conn, decision.region, NODE_LOST_AFTER_S, executor, template["id"]
        )
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
        tx.upsert(ChangeKind.BACKEND, row["id"], with_trace_context(row))
        if req.key is not None:
            tx.upsert(ChangeKind.KEY, req.key, await keys.assign(conn, req.key, row["id"], fencing_token))
    wire = decision.to_wire(ranking_limit=None if ctx.explain else 0)
    return Placed(row, fleet.edge_urls[decision.region], True, PlacementView(**wire), node["edge_domain"])
