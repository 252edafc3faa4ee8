"""The keyring that signs connection tokens, and its rotation."""

from __future__ import annotations

import asyncpg

from control.queries import signing_keys
from control.versioning import write_transaction
from sync import tokens
from sync.ids import new_id
from sync.models import ChangeKind
from sync.timing import CONNECTION_TOKEN_TTL_S


class Keyring:
    def __init__(self) -> None:
        self.key_id = ""
        self._secret = ""

    def load(self, key_id: str, secret: str) -> None:
        self.key_id, self._secret = key_id, secret

    def issue(self, backend_id: str, user: str | None, ttl_s: float = CONNECTION_TOKEN_TTL_S) -> str:
        return tokens.sign(tokens.claims_now(backend_id, user, ttl_s), self.key_id, self._secret)


async def ensure_active_key(pool: asyncpg.Pool, keyring: Keyring) -> None:
    async with pool.acquire() as conn:
        row = await signing_keys.active(conn)
    if row is None:
        await rotate(pool, keyring)
    else:
        keyring.load(row["id"], row["secret"])


async def rotate(pool: asyncpg.Pool, keyring: Keyring) -> str:
    """Start signing with a new key; older keys stay valid for verification (retired, not deleted)."""
    async with write_transaction(pool) as tx:
        row = await signing_keys.insert(tx.conn, new_id("sk"), tokens.new_signing_secret())
        tx.upsert(ChangeKind.SIGNING_KEY, row["id"], row)
        for retired in await signing_keys.retire_all_but(tx.conn, row["id"]):
            tx.upsert(ChangeKind.SIGNING_KEY, retired["id"], retired)
    keyring.load(row["id"], row["secret"])
    return str(row["id"])
