"""API tokens: hashing, minting (scoped and confined), listing, deleting, and resolving a bearer
token (or, for an edge forwarding a user's call, a token id) to its caller."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from control.db import Conn
from control.queries import api_tokens
from control.singleflight import SingleFlight
from control.versioning import WriteTx, write_transaction
from sync.confinement import Confinement
from sync.errors import BadRequest, Forbidden, NodeMismatch, NotFound, Unauthorized
from sync.ids import new_id
from sync.models import ChangeKind, Scope, TokenIn, TokenView
from sync.timing import AUTH_CACHE_TTL_S

MAX_BEARER_LENGTH = 512


@dataclass(frozen=True)
class Caller:
    token_id: str
    scopes: frozenset[Scope]
    confinement: Confinement = field(default_factory=Confinement)
    expires_at: datetime | None = None
    node_id: str | None = None
    """Set for a node-bound edge token: the only node it speaks for."""

    def allows(self, *allowed: Scope) -> bool:
        """True when the caller has `admin` or any of `allowed`."""
        return Scope.ADMIN in self.scopes or not self.scopes.isdisjoint(allowed)

    def require(self, *allowed: Scope) -> None:
        """Pass when the caller has `admin` or any of `allowed`."""
        if self.allows(*allowed):
            return
        raise Forbidden(
            "this token lacks the scope for this call",
            fields={"required": [s.value for s in (Scope.ADMIN, *allowed)]},
        )

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def controls_every_backend(self) -> bool:
        """Admin and edge tokens act on every backend; client tokens only on those they may see."""
        return bool(self.scopes & {Scope.ADMIN, Scope.EDGE})

    def sees(self, backend: asyncpg.Record) -> bool:
        """Whether this caller may read, terminate or revoke `backend` (observers read more: backends.py)."""
        return self.controls_every_backend or self.confinement.sees(
            key=backend["key"],
            template=backend["template_name"],
            owner_token_id=backend["owner_token_id"],
            token_id=self.token_id,
        )


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    """Caches token lookups for AUTH_CACHE_TTL_S (never past a token's expiry) so the hot path does
    not read the database each time. A delete here clears it; other control planes wait the TTL."""

    def __init__(self, ttl_s: float = AUTH_CACHE_TTL_S, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Caller | None]] = {}
        self._flights: SingleFlight[Caller | None] = SingleFlight()

    def get(self, lookup: bytes) -> tuple[bool, Caller | None]:
        hit = self._entries.get(lookup)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, lookup: bytes, caller: Caller | None) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        ttl = self._ttl_s
        if caller is not None and caller.expires_at is not None:
            ttl = min(ttl, (caller.expires_at - datetime.now(UTC)).total_seconds())
        self._entries[lookup] = (time.monotonic() + ttl, caller)

    def clear(self) -> None:
        self._entries.clear()

    async def lookup(self, key: bytes, read: Callable[[], Awaitable[Caller | None]]) -> Caller | None:
        """The cached caller of `key`, else `read()` once for every concurrent caller asking for it
        (a thousand edges whose entry expired together make one database read, not a thousand). A
        failed shared read is not handed to every caller: each then reads once itself."""
        cached, caller = self.get(key)
        if cached:
            return caller

        async def read_and_keep() -> Caller | None:
            found = await read()
            self.put(key, found)
            return found

        try:
            caller, _ = await self._flights.run(key.hex(), read_and_keep)
        except Exception:  # a shared read failed: each caller tries once on its own, as without sharing
            return await read_and_keep()
        return caller


def _caller(row: asyncpg.Record | None) -> Caller | None:
    if row is None:
        return None
    return Caller(
        token_id=row["id"],
        scopes=frozenset(Scope(s) for s in row["scopes"] if s in Scope.__members__.values()),
        confinement=Confinement.of(row["key_prefix"], row["user_id"], row["templates"]),
        expires_at=row["expires_at"],
        node_id=row["node_id"],
    )


async def check_speaks_for(conn: Conn, caller: Caller, node_id: str | None) -> None:
    """A heartbeat, status report or journal replay for `node_id` (None: a backend not placed on a
    node yet): an admin speaks for any node, a node-bound token only for its node, an unbound edge
    token only for nodes no token is bound to."""
    if caller.is_admin:
        return
    if caller.node_id is not None:
        if caller.node_id != node_id:
            raise NodeMismatch(
                "this token is bound to another node", fields={"node_id": node_id, "bound_to": caller.node_id}
            )
        return
    if node_id is not None and await api_tokens.node_is_bound(conn, node_id):
        raise NodeMismatch(
            "this node has its own token: only a token bound to it speaks for it", fields={"node_id": node_id}
        )


async def enrol_node(tx: WriteTx, caller: Caller, node_id: str) -> str | None:
    """Bind a new token to a node no token is bound to (asked by an edge holding an unbound edge
    token, in its heartbeat); its secret is returned once. None when nothing is to be done."""
    if caller.is_admin or caller.node_id is not None or await api_tokens.node_is_bound(tx.conn, node_id):
        return None
    body = TokenIn(name=f"node {node_id}", scopes=[Scope.EDGE], node_id=node_id)
    _, secret = await _mint(tx, caller, body, [Scope.EDGE.value], Confinement(), caller.expires_at)
    return secret


def _bearer_digest(authorization: str) -> bytes | None:
    """The lookup key of `Authorization: Bearer <token>`; None when the header is not of that form."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_BEARER_LENGTH:
        return None
    return hash_token(token)


async def authenticate(pool: asyncpg.Pool, cache: TokenCache, authorization: str | None) -> Caller:
    if not authorization:
        raise Unauthorized("missing bearer token")
    digest = _bearer_digest(authorization)
    if digest is None:
        raise Unauthorized("expected `Authorization: Bearer <token>`")

    async def read() -> Caller | None:
        async with pool.acquire() as conn:
            return _caller(await api_tokens.by_hash(conn, digest))

    caller = await cache.lookup(digest, read)
    if caller is None:
        raise Unauthorized("unknown, expired or revoked token")
    return caller


async def caller_by_id(pool: asyncpg.Pool, cache: TokenCache, token_id: str) -> Caller:
    """The caller an edge names when it forwards a user's call (the edge authenticated the bearer)."""
    lookup = b"id:" + token_id.encode()

    async def read() -> Caller | None:
        async with pool.acquire() as conn:
            return _caller(await api_tokens.by_id(conn, token_id))

    caller = await cache.lookup(lookup, read)
    if caller is None:
        raise Unauthorized("the forwarded caller's token is unknown, expired or revoked")
    return caller


def _view(row: asyncpg.Record, secret: str | None = None) -> TokenView:
    return TokenView(
        id=row["id"],
        name=row["name"],
        scopes=row["scopes"],
        key_prefix=row["key_prefix"],
        user=row["user_id"],
        templates=row["templates"],
        node_id=row["node_id"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        token=secret,
    )


def _minted_scopes(caller: Caller, body: TokenIn) -> list[str]:
    scopes = {s.value for s in body.scopes}
    if not caller.is_admin and not scopes <= {s.value for s in caller.scopes}:
        raise Forbidden("a token may only mint tokens with scopes it has", fields={"scopes": "beyond yours"})
    return sorted(scopes)


def _minted_expiry(caller: Caller, body: TokenIn) -> datetime | None:
    expires_at = body.expires_at
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise BadRequest("expires_at is in the past", fields={"expires_at": "must be in the future"})
    if caller.expires_at is not None and (expires_at is None or expires_at > caller.expires_at):
        if expires_at is not None:
            raise Forbidden("a minted token may not outlive its minter", fields={"expires_at": "after yours"})
        expires_at = caller.expires_at
    return expires_at


def _minted_node(caller: Caller, body: TokenIn) -> str | None:
    """Only an admin binds a token to a node (edge tokens cannot mint; they enrol their own node
    through its heartbeat, where it is checked that no token is bound to the node yet)."""
    if body.node_id is not None and not caller.is_admin:
        raise Forbidden("only an admin token binds a token to a node", fields={"node_id": "admin only"})
    return body.node_id


async def issue_token(pool: asyncpg.Pool, caller: Caller, body: TokenIn) -> TokenView:
    scopes = _minted_scopes(caller, body)
    asked = (body.key_prefix, body.user, body.templates)
    confinement = Confinement.of(*asked) if caller.is_admin else caller.confinement.narrower(*asked)
    expires_at = _minted_expiry(caller, body)
    _minted_node(caller, body)
    async with write_transaction(pool) as tx:
        row, secret = await _mint(tx, caller, body, scopes, confinement, expires_at)
    return _view(row, secret)


async def _mint(
    tx: WriteTx, caller: Caller, body: TokenIn, scopes: list[str], confinement: Confinement, expires_at: datetime | None
) -> tuple[asyncpg.Record, str]:
    secret = "mrd_" + secrets.token_urlsafe(32)
    row = await api_tokens.insert_scoped(
        tx.conn,
        token_id=new_id("tk"),
        name=body.name,
        token_hash=hash_token(secret),
        scopes=scopes,
        confinement=confinement,
        expires_at=expires_at,
        created_by=caller.token_id,
        node_id=body.node_id,
    )
    tx.upsert(ChangeKind.API_TOKEN, row["hash"], api_tokens.replicated(row))
    return row, secret


async def list_tokens(pool: asyncpg.Pool, caller: Caller) -> list[TokenView]:
    """Admin: every token. Others: their own token and the tokens minted under it."""
    async with pool.acquire() as conn:
        rows = await api_tokens.list_all(conn) if caller.is_admin else await api_tokens.tree(conn, caller.token_id)
    return [_view(r) for r in rows]


async def delete_token(pool: asyncpg.Pool, cache: TokenCache, caller: Caller, token_id: str) -> TokenView:
    """Revoke the token and every token minted under it; edges learn it through sync."""
    async with write_transaction(pool) as tx:
        if not caller.is_admin and token_id not in {r["id"] for r in await api_tokens.tree(tx.conn, caller.token_id)}:
            raise NotFound(f"no token {token_id!r}")
        rows = await api_tokens.revoke_tree(tx.conn, token_id)
        if not rows and await api_tokens.by_id(tx.conn, token_id, include_revoked=True) is None:
            raise NotFound(f"no token {token_id!r}")
        for row in rows:
            tx.upsert(ChangeKind.API_TOKEN, row["hash"], api_tokens.replicated(row))
    cache.clear()
    async with pool.acquire() as conn:
        found = await api_tokens.by_id(conn, token_id, include_revoked=True)
    assert found is not None
    return _view(found)


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
