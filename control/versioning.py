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
from datetime import datetime
from typing import Any

import asyncpg

from control.db import Conn
from control.notifier import CHANNEL
from control.queries import changes
from sync.models import ChangeKind, ChangeOp


def jsonable(record: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(record).items()}


@dataclass
class WriteTx:
    conn: Conn
    pending: list[tuple[str, str, str, dict[str, Any] | None]] = field(default_factory=list)
    version: int | None = None

    def upsert(self, kind: ChangeKind, object_id: str, body: asyncpg.Record | dict[str, Any]) -> None:
        self.pending.append((kind.value, object_id, ChangeOp.UPSERT.value, jsonable(body)))

    def delete(self, kind: ChangeKind, object_id: str) -> None:
        self.pending.append((kind.value, object_id, ChangeOp.DELETE.value, None))


@asynccontextmanager
async def write_transaction(pool: asyncpg.Pool) -> AsyncIterator[WriteTx]:
    async with pool.acquire() as conn, conn.transaction():
        tx = WriteTx(conn)
        yield tx
        if tx.pending:
            tx.version = await changes.append_version(conn, CHANNEL, tx.pending)
