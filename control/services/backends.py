"""Backends: reading them, their forward-only status machine, termination and token revocation."""

from __future__ import annotations

import asyncpg

from control.queries import backends, token_revocations
from control.services.auth import Caller, check_speaks_for
from control.versioning import WriteTx, write_transaction
from sync.errors import BackendGone, NotFound
from sync.ids import new_id
from sync.models import (
    BackendStatus,
    BackendView,
    Scope,
    StatusReport,
    TerminationReason,
)
from sync.state import BackendState, RevocationState, from_row


def view(row: asyncpg.Record) -> BackendView:
    return BackendView(
        id=row["id"],
        key=row["key"],
        template=row["template_name"],
        template_id=row["template_id"],
        region=row["region"],
        node=row["node_id"],
        address=row["address"],
        status=BackendStatus(row["status"]),
        fencing_token=row["fencing_token"],
        created_at=row["created_at"],
        status_changed_at=row["status_changed_at"],
        termination_reason=row["termination_reason"],
        exit_code=row["exit_code"],
    )


def _visible(row: asyncpg.Record | None, caller: Caller) -> bool:
    return row is not None and caller.sees(row)


def _reads_all(caller: Caller) -> bool:
    """Observers read every backend; they still control (terminate, revoke) only their own."""
    return caller.is_admin or Scope.OBSERVER in caller.scopes


def _readable(row: asyncpg.Record | None, caller: Caller) -> bool:
    return row is not None and (_reads_all(caller) or _visible(row, caller))


async def get_backend(pool: asyncpg.Pool, backend_id: str, caller: Caller) -> BackendView:
    async with pool.acquire() as conn:
        row = await backends.get(conn, backend_id)
    if row is None or not _readable(row, caller):
        raise NotFound(f"no backend {backend_id!r}")
    return view(row)


async def list_backends(
    pool: asyncpg.Pool, caller: Caller, *, key: str | None, region: str | None, status: str | None, limit: int
) -> list[BackendView]:
    confined = caller.confinement
    everything = _reads_all(caller)
    # A prefix-confined token lists its namespace; an unconfined client token the backends it created.
    owner = None if everything or confined.key_prefix is not None else caller.token_id
    async with pool.acquire() as conn:
        rows = await backends.list_filtered(
            conn,
            key=key,
            region=region,
            status=status,
            owner_token_id=owner,
            key_prefix=None if everything else confined.key_prefix,
            templates=None if everything or confined.templates is None else sorted(confined.templates),
            limit=limit,
        )
    return [view(r) for r in rows]


async def transition(
    tx: WriteTx,
    row: asyncpg.Record,
    status: BackendStatus,
    *,
    address: str | None = None,
    reason: TerminationReason | None = None,
    exit_code: int | None = None,
) -> asyncpg.Record | None:
    """Move a backend forward; a report that would move it backward (or nowhere) changes nothing."""
    current = BackendStatus(row["status"])
    if status.rank <= current.rank:
        return None
    if status is BackendStatus.TERMINATED and reason is None:
        reason = TerminationReason(row["termination_reason"] or TerminationReason.FAILED)
    updated = await backends.set_status(
        tx.conn,
        row["id"],
        status.value,
        address=address,
        termination_reason=reason.value if reason else None,
        exit_code=exit_code,
    )
    tx.put(from_row(BackendState, updated))
    return updated


async def apply_report(tx: WriteTx, row: asyncpg.Record, report: StatusReport) -> asyncpg.Record | None:
    return await transition(
        tx,
        row,
        report.status,
        address=report.address,
        reason=report.termination_reason,
        exit_code=report.exit_code,
    )


async def terminate(pool: asyncpg.Pool, backend_id: str, caller: Caller, *, hard: bool) -> BackendView:
    """Ask the backend's edge to stop it: draining (graceful) or terminated at once (hard)."""
    async with write_transaction(pool) as tx:
        row = await backends.get(tx.conn, backend_id, for_update=True)
        if row is None or not _visible(row, caller):
            raise NotFound(f"no backend {backend_id!r}")
        target = BackendStatus.TERMINATED if hard else BackendStatus.DRAINING
        row = await transition(tx, row, target, reason=TerminationReason.REQUESTED) or row
    return view(row)


async def revoke(pool: asyncpg.Pool, backend_id: str, caller: Caller, user: str | None) -> dict[str, object]:
    """A user-bound token revokes only its own user's connection tokens."""
    user = caller.confinement.revoke_user(user)
    async with write_transaction(pool) as tx:
        row = await backends.get(tx.conn, backend_id)
        if row is None or not _visible(row, caller):
            raise NotFound(f"no backend {backend_id!r}")
        if row["status"] == BackendStatus.TERMINATED:
            raise BackendGone(f"backend {backend_id!r} is terminated")
        rev = await token_revocations.insert(tx.conn, new_id("rv"), backend_id, user)
        tx.put(from_row(RevocationState, rev))
    return {"id": rev["id"], "backend_id": backend_id, "user": user, "revoked_at": rev["revoked_at"]}


async def report_status(pool: asyncpg.Pool, caller: Caller, report: StatusReport) -> BackendView:
    """One backend's status, from the edge of its node (a node-bound token reports only its own)."""
    async with write_transaction(pool) as tx:
        row = await backends.get(tx.conn, report.id, for_update=True)
        if row is None:
            raise NotFound(f"no backend {report.id!r}")
        await check_speaks_for(tx.conn, caller, row["node_id"])
        row = await apply_report(tx, row, report) or row
    return view(row)
