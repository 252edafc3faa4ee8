"""Write transactions of the versioned state.

Every write goes through `write_transaction`: the caller records what it changed, and on the way
out the transaction takes the next system version (`UPDATE … RETURNING`, holding the row lock until
commit, so commit order equals version order), appends the change rows and notifies listeners.
A transaction that recorded nothing does not move the version.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from control.db import Conn
from control.notifier import CHANNEL
from control.queries import changes
from sync.models import ChangeKind, ChangeOp
from sync.state import State, parse


@dataclass
class WriteTx:
    conn: Conn
    pending: list[tuple[str, str, str, dict[str, Any] | None]] = field(default_factory=list)
    version: int | None = None

    def put(self, state: State) -> None:
        """Record the whole new object; its body on the wire is the model's (sync/state.py)."""
        self.pending.append((state.KIND.value, state.object_id, ChangeOp.UPSERT.value, state.body()))

    def upsert(self, kind: ChangeKind, object_id: str, body: asyncpg.Record | dict[str, Any]) -> None:
        """`put` for a row or dict: validated into the kind's model first."""
        state = parse(kind, body)
        if state.object_id != object_id:
            raise ValueError(f"{kind} body names {state.object_id!r}, not {object_id!r}")
        self.put(state)

    def delete(self, kind: ChangeKind, object_id: str) -> None:
        self.pending.append((kind.value, object_id, ChangeOp.DELETE.value, None))


@asynccontextmanager
async def write_transaction(pool: asyncpg.Pool) -> AsyncIterator[WriteTx]:
    async with pool.acquire() as conn, conn.transaction():
        tx = WriteTx(conn)
        yield tx
        if tx.pending:
            tx.version = await changes.append_version(conn, CHANNEL, tx.pending)
