"""Reconciliation: an edge's journal, replayed when the control plane is back (`POST
/v1/nodes/{id}/journal`), applied in one transaction.

- An offline spawn whose key is free (or keyless) is adopted with its own fencing token.
- An offline spawn whose key has another live backend (another region spawned it while cut off too,
  or the control plane gave the key away meanwhile): the survivor rule of sync/offline.py (greater
  fencing token, then greater backend id) keeps one; the other is terminated `superseded`.
- A status report is applied as a heartbeat's would be (forward-only).

Idempotent: a spawn already known answers what was decided the first time; a report that moves
nothing changes nothing; replaying a page twice does not move the version. The key's fencing
counter is raised to the greatest token seen, so later online spawns get greater ones.
"""

from __future__ import annotations

import asyncpg

from control.queries import backends, edge_nodes, keys, templates
from control.services.auth import Caller, check_speaks_for
from control.services.backends import apply_report, transition
from control.versioning import WriteTx, write_transaction
from sync.errors import NotFound
from sync.models import BackendStatus, StatusReport, TerminationReason
from sync.offline import OfflineSpawn, ReplayIn, ReplayOut, ReplayOutcome, ReplayResult, survivor
from sync.state import BackendState, KeyState, from_row


async def replay(pool: asyncpg.Pool, caller: Caller, node_id: str, body: ReplayIn) -> ReplayOut:
    results: list[ReplayResult] = []
    async with write_transaction(pool) as tx:
        await check_speaks_for(tx.conn, caller, node_id)
        if await edge_nodes.get(tx.conn, node_id) is None:
            raise NotFound(f"no edge node {node_id!r}")
        for entry in body.entries:
            if entry.spawn is not None:
                results.append(await _spawn(tx, node_id, entry.seq, entry.spawn))
            elif entry.report is not None:
                results.append(await _report(tx, node_id, entry.seq, entry.report))
    return ReplayOut(version=tx.version, results=results)


def _result(seq: int, row: asyncpg.Record, outcome: ReplayOutcome, winner: str | None = None) -> ReplayResult:
    return ReplayResult(seq=seq, backend_id=row["id"], outcome=outcome, status=row["status"], winner_id=winner)


def _decided(seq: int, row: asyncpg.Record, key_row: asyncpg.Record | None) -> ReplayResult:
    """What was decided when this spawn was first replayed."""
    if row["termination_reason"] == TerminationReason.SUPERSEDED:
        winner = key_row["backend_id"] if key_row is not None else None
        return _result(seq, row, ReplayOutcome.SUPERSEDED, winner)
    return _result(seq, row, ReplayOutcome.ADOPTED)


async def _spawn(tx: WriteTx, node_id: str, seq: int, spawn: OfflineSpawn) -> ReplayResult:
    conn = tx.conn
    if spawn.node_id != node_id or await templates.get(conn, spawn.template_id) is None:
        return ReplayResult(seq=seq, backend_id=spawn.id, outcome=ReplayOutcome.IGNORED)
    key_row = await keys.lock(conn, spawn.key) if spawn.key is not None else None
    known = await backends.get(conn, spawn.id, for_update=True)
    if known is not None:
        return _decided(seq, known, key_row)
    live = await backends.live_for_key(conn, spawn.key) if spawn.key is not None else None
    if live is not None:
        live = await backends.get(conn, live["id"], for_update=True)
    if (
        live is not None
        and survivor((live["fencing_token"], live["id"]), (spawn.fencing_token, spawn.id))[1] == live["id"]
    ):
        row = await _insert(tx, spawn, BackendStatus.TERMINATED, TerminationReason.SUPERSEDED)
        await _assign(tx, spawn, key_row, live["id"])
        return _result(seq, row, ReplayOutcome.SUPERSEDED, live["id"])
    if live is not None:
        await transition(tx, live, BackendStatus.TERMINATED, reason=TerminationReason.SUPERSEDED)
    row = await _insert(tx, spawn, BackendStatus.STARTING, None)
    await _assign(tx, spawn, key_row, spawn.id)
    return _result(seq, row, ReplayOutcome.ADOPTED)


async def _insert(
    tx: WriteTx, spawn: OfflineSpawn, status: BackendStatus, reason: TerminationReason | None
) -> asyncpg.Record:
    row = await backends.insert(
        tx.conn,
        backend_id=spawn.id,
        key=spawn.key,
        template_name=spawn.template_name,
        template_id=spawn.template_id,
        region=spawn.region,
        node_id=spawn.node_id,
        fencing_token=spawn.fencing_token,
        owner_token_id=spawn.owner_token_id,
        user_id=spawn.user_id,
        secret=spawn.secret,
        created_at=spawn.created_at,
        status=status.value,
        termination_reason=reason.value if reason else None,
    )
    tx.put(from_row(BackendState, row))
    return row


async def _assign(tx: WriteTx, spawn: OfflineSpawn, key_row: asyncpg.Record | None, backend_id: str) -> None:
    if spawn.key is None or key_row is None:
        return
    counter = max(key_row["fencing_token"], spawn.fencing_token)
    tx.put(from_row(KeyState, await keys.assign(tx.conn, spawn.key, backend_id, counter)))


async def _report(tx: WriteTx, node_id: str, seq: int, report: StatusReport) -> ReplayResult:
    row = await backends.get(tx.conn, report.id, for_update=True)
    if row is None or row["node_id"] != node_id:
        return ReplayResult(seq=seq, backend_id=report.id, outcome=ReplayOutcome.IGNORED)
    final = await apply_report(tx, row, report) or row
    return _result(seq, final, ReplayOutcome.APPLIED)
