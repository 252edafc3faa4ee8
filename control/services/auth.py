"""API tokens: hashing, issuing, and resolving a bearer token to its caller."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg

from control.queries import api_tokens
from control.versioning import write_transaction
from sync.errors import Forbidden, Unauthorized
from sync.ids import new_id
from sync.models import ChangeKind, Scope, TokenIn, TokenView
from sync.timing import AUTH_CACHE_TTL_S

MAX_BEARER_LENGTH = 512


@dataclass(frozen=True)
class Caller:
    token_id: str
    scopes: frozenset[Scope]

    def require(self, *allowed: Scope) -> None:
        """Pass when the caller has `admin` or any of `allowed`."""
        if Scope.ADMIN in self.scopes or self.scopes.intersection(allowed):
            return
        raise Forbidden(
            "this token lacks the scope for this call",
            fields={"required": [s.value for s in (Scope.ADMIN, *allowed)]},
        )

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    """Caches token lookups for AUTH_CACHE_TTL_S so the hot path does not read the database each time."""

    def __init__(self, ttl_s: float = AUTH_CACHE_TTL_S, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Caller | None]] = {}

    def get(self, digest: bytes) -> tuple[bool, Caller | None]:
        hit = self._entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, digest: bytes, caller: Caller | None) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self._ttl_s, caller)


async def authenticate(pool: asyncpg.Pool, cache: TokenCache, authorization: str | None) -> Caller:
    if not authorization:
        raise Unauthorized("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_BEARER_LENGTH:
        raise Unauthorized("expected `Authorization: Bearer <token>`")
    digest = hash_token(token)
    cached, caller = cache.get(digest)
    if not cached:
        async with pool.acquire() as conn:
            row = await api_tokens.by_hash(conn, digest)
        caller = Caller(token_id=row["id"], scopes=frozenset(Scope(s) for s in row["scopes"])) if row else None
        cache.put(digest, caller)
    if caller is None:
        raise Unauthorized("unknown or revoked token")
    return caller


async def issue_token(pool: asyncpg.Pool, body: TokenIn) -> TokenView:
    secret = "mrd_" + secrets.token_urlsafe(32)
    row = await _store(pool, body.name, secret, sorted({s.value for s in body.scopes}))
    return TokenView(id=row["id"], name=row["name"], scopes=row["scopes"], created_at=row["created_at"], token=secret)


async def ensure_token(pool: asyncpg.Pool, name: str, secret: str, scopes: list[Scope]) -> None:
    """Make `secret` a valid token with `scopes` (the bootstrap admin token, dev-cluster edge tokens)."""
    await _store(pool, name, secret, [s.value for s in scopes])


async def _store(pool: asyncpg.Pool, name: str, secret: str, scopes: list[str]) -> asyncpg.Record:
    """Tokens are replicated (hash only) so edges authenticate API calls without a round trip."""
    async with write_transaction(pool) as tx:
        before = await api_tokens.by_hash(tx.conn, hash_token(secret))
        row = await api_tokens.insert(tx.conn, new_id("tk"), name, hash_token(secret), scopes)
        if before is None or sorted(before["scopes"]) != sorted(row["scopes"]):
            tx.upsert(ChangeKind.API_TOKEN, row["hash"], api_tokens.replicated(row))
    return row
