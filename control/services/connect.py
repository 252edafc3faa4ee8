"""`connect`: the key's live backend, or a new one placed near the user — in one transaction."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from control.placement import PlacementDecision, PlacementInput, Placer, RegionCandidate
from control.queries import backend_status_history, backends, edge_nodes, keys, regions, template_names
from control.services.auth import Caller
from control.services.signing import Keyring
from control.versioning import write_transaction
from sync.errors import KeyHeld, NoCapacity, TemplateUnknown
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


@dataclass(frozen=True)
class _Placed:
    row: asyncpg.Record
    edge_url: str
    spawned: bool
    placement: PlacementView


async def connect(
    pool: asyncpg.Pool, placer: Placer, keyring: Keyring, req: ConnectRequest, ctx: ConnectContext
) -> ConnectResponse:
    placed = await _existing(pool, req) if req.key is not None else None
    if placed is None:
        placed = await _spawn(pool, placer, req, ctx)
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


async def candidates(conn: asyncpg.Connection) -> tuple[list[RegionCandidate], dict[str, str]]:
    """Placement candidates from regions and their nodes' health and load; and each region's edge URL."""
    region_rows = await regions.list_all(conn)
    node_rows = await edge_nodes.list_with_load(conn, NODE_LOST_AFTER_S)
    out = []
    for r in region_rows:
        nodes = [n for n in node_rows if n["region"] == r["name"]]
        healthy = [n for n in nodes if n["healthy"]]
        live = sum(n["live"] for n in nodes)
        capacity = sum(n["capacity"] for n in healthy)
        free = sum(max(n["capacity"] - n["live"], 0) for n in healthy)
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
            )
        )
    return out, {r["name"]: r["edge_url"] for r in region_rows}


async def _spawn(pool: asyncpg.Pool, placer: Placer, req: ConnectRequest, ctx: ConnectContext) -> _Placed:
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
        decision, edge_urls = await _place(conn, placer, req, ctx)
        node = await edge_nodes.least_loaded_in_region(conn, decision.region, NODE_LOST_AFTER_S)
        if node is None:
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
        await backend_status_history.append(conn, row["id"], BackendStatus.SCHEDULED.value, None)
        tx.upsert(ChangeKind.BACKEND, row["id"], row)
        if req.key is not None:
            tx.upsert(ChangeKind.KEY, req.key, await keys.assign(conn, req.key, row["id"], fencing_token))
    wire = decision.to_wire()
    return _Placed(row, edge_urls[decision.region], True, PlacementView(**wire))


async def _place(
    conn: asyncpg.Connection, placer: Placer, req: ConnectRequest, ctx: ConnectContext
) -> tuple[PlacementDecision, dict[str, str]]:
    cands, edge_urls = await candidates(conn)
    default_region = ctx.default_region or await regions.oldest_name(conn)
    decision = placer.place(
        PlacementInput(
            pinned_region=req.region,
            location=(req.location.lat, req.location.lon) if req.location else None,
            client_ip=ctx.client_ip,
            arrival_region=ctx.arrival_region,
            default_region=default_region,
        ),
        cands,
    )
    return decision, edge_urls
