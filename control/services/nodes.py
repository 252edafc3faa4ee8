"""Edge-node heartbeats: registration, liveness, and the backend statuses they carry."""

from __future__ import annotations

import asyncpg

from control.queries import backends, edge_nodes, regions
from control.services.auth import Caller, check_speaks_for, enrol_node
from control.services.backends import apply_report
from control.versioning import write_transaction
from sync.catalog import KNOWN_REGIONS
from sync.errors import RegionUnknown
from sync.models import BackendStatus, HeartbeatIn, HeartbeatOut, StatusReport, StatusReportResult
from sync.state import NodeState, RegionState, from_row


async def heartbeat(pool: asyncpg.Pool, caller: Caller, hb: HeartbeatIn) -> HeartbeatOut:
    """Register or refresh a node and apply its backend reports (only the caller's own node, if
    its token is bound to one; `enrol` binds a new token to a node that has none).

    Liveness (`last_heartbeat_at`, `applied_version`) is observation, not replicated state: a
    heartbeat moves the system version only when registration data or a backend status changes.
    """
    results: list[StatusReportResult] = []
    async with write_transaction(pool) as tx:
        conn = tx.conn
        await check_speaks_for(conn, caller, hb.node_id)
        if await regions.get(conn, hb.region) is None:
            known = KNOWN_REGIONS.get(hb.region)
            if known is None:
                raise RegionUnknown(
                    f"region {hb.region!r} is not registered and not a known region name",
                    fields={"region": hb.region},
                )
            row = await regions.upsert(conn, hb.region, known.lat, known.lon, hb.edge_url or hb.address, None)
            tx.put(from_row(RegionState, row))
        reports = {r.id: r for r in hb.backends}
        found = {r["id"]: r for r in await backends.get_many(conn, sorted(reports))} if reports else {}
        # Lock only the rows this heartbeat moves forward: most reports repeat what is known.
        moving = sorted(i for i, r in reports.items() if i in found and _moves(found[i], r, hb.node_id))
        found |= {r["id"]: r for r in await backends.get_many(conn, moving, for_update=True)} if moving else {}
        for backend_id, report in reports.items():
            current = found.get(backend_id)
            if current is None or current["node_id"] != hb.node_id:
                results.append(StatusReportResult(id=backend_id, accepted=False))
                continue
            updated = await apply_report(tx, current, report)
            final = updated or current
            accepted = updated is not None or current["status"] == report.status.value
            results.append(StatusReportResult(id=backend_id, accepted=accepted, status=final["status"]))
        # Backend rows are locked before the node row (as terminate does) so the two never deadlock.
        before = await edge_nodes.get(conn, hb.node_id)
        node = await edge_nodes.upsert(
            conn,
            hb.node_id,
            hb.region,
            hb.address,
            hb.capacity,
            hb.applied_version,
            hb.shutting_down,
            hb.executors,
            hb.unhealthy_reason,
            hb.edge_domain,
            hb.warm_pools,
        )
        if before is None or any(before[k] != node[k] for k in ("region", "address", "capacity")):
            tx.put(from_row(NodeState, node))
        node_token = await enrol_node(tx, caller, hb.node_id) if hb.enrol else None
    return HeartbeatOut(
        node_id=hb.node_id, version=tx.version, backends=results, draining=node["draining"], node_token=node_token
    )


def _moves(row: asyncpg.Record, report: StatusReport, node_id: str) -> bool:
    return row["node_id"] == node_id and report.status.rank > BackendStatus(row["status"]).rank
