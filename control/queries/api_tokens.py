"""Queries on `api_tokens`."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from asyncpg.cursor import CursorFactory

from control.db import Conn, one
from sync.confinement import Confinement

_RETURNING = (
    "id, name, scopes, key_prefix, user_id, templates, node_id, expires_at, created_by, created_at,"
    " encode(token_hash, 'hex') AS hash, revoked_at"
)
_VALID = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


async def insert(conn: Conn, token_id: str, name: str, token_hash: bytes, scopes: list[str]) -> asyncpg.Record:
    """An unconfined token with a known secret (bootstrap); the same secret again revives it."""
    return await one(
        conn,
        f"""
        INSERT INTO api_tokens (id, name, token_hash, scopes) VALUES ($1, $2, $3, $4)
        ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL, scopes = EXCLUDED.scopes
        RETURNING {_RETURNING}
        """,
        token_id,
        name,
        token_hash,
        scopes,
    )


async def insert_scoped(
    conn: Conn,
    *,
    token_id: str,
    name: str,
    token_hash: bytes,
    scopes: list[str],
    confinement: Confinement,
    expires_at: datetime | None,
    created_by: str,
    node_id: str | None = None,
) -> asyncpg.Record:
    return await one(
        conn,
        f"""
        INSERT INTO api_tokens
            (id, name, token_hash, scopes, key_prefix, user_id, templates, expires_at, created_by, node_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        RETURNING {_RETURNING}
        """,
        token_id,
        name,
        token_hash,
        scopes,
        confinement.key_prefix,
        confinement.user,
        sorted(confinement.templates) if confinement.templates is not None else None,
        expires_at,
        created_by,
        node_id,
    )


async def node_is_bound(conn: Conn, node_id: str) -> bool:
    """Whether a valid token is bound to the node (then only such a token speaks for it)."""
    query = f"SELECT EXISTS (SELECT 1 FROM api_tokens WHERE node_id = $1 AND {_VALID})"
    return bool(await conn.fetchval(query, node_id))


async def by_hash(conn: Conn, token_hash: bytes) -> asyncpg.Record | None:
    """A valid (unrevoked, unexpired) token by the hash of its secret."""
    return await conn.fetchrow(f"SELECT {_RETURNING} FROM api_tokens WHERE token_hash = $1 AND {_VALID}", token_hash)


async def by_id(conn: Conn, token_id: str, *, include_revoked: bool = False) -> asyncpg.Record | None:
    valid = "true" if include_revoked else _VALID
    return await conn.fetchrow(f"SELECT {_RETURNING} FROM api_tokens WHERE id = $1 AND {valid}", token_id)


async def list_all(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {_RETURNING} FROM api_tokens ORDER BY created_at, id")


_TREE = """
    WITH RECURSIVE tree AS (
        SELECT id FROM api_tokens WHERE id = $1
        UNION SELECT t.id FROM api_tokens t JOIN tree ON t.created_by = tree.id
    )
"""


async def tree(conn: Conn, token_id: str) -> list[asyncpg.Record]:
    """The token and every token minted under it, at any depth."""
    return await conn.fetch(
        f"{_TREE} SELECT {_RETURNING} FROM api_tokens WHERE id IN (SELECT id FROM tree) ORDER BY created_at, id",
        token_id,
    )


async def revoke_tree(conn: Conn, token_id: str) -> list[asyncpg.Record]:
    """Revoke the token and everything minted under it; returns the rows revoked now."""
    return await conn.fetch(
        f"""{_TREE}
        UPDATE api_tokens SET revoked_at = now()
        WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL
        RETURNING {_RETURNING}
        """,
        token_id,
    )


def replicated(row: asyncpg.Record) -> dict[str, object]:
    """What edges hold of a token: its hash (never the secret), id, scopes, confinement, expiry
    and revocation."""
    return {
        "hash": row["hash"],
        "token_id": row["id"],
        "scopes": list(row["scopes"]),
        "key_prefix": row["key_prefix"],
        "user": row["user_id"],
        "templates": list(row["templates"]) if row["templates"] is not None else None,
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
    }


def snapshot(conn: Conn) -> CursorFactory:
    """Every API token as edges hold it, for the sync snapshot (the same shape as `replicated`)."""
    return conn.cursor(
        "SELECT encode(token_hash, 'hex') AS hash, id AS token_id, scopes, key_prefix, user_id AS \"user\","
        " templates, expires_at, revoked_at FROM api_tokens"
    )
