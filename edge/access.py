"""Who may do what at the edge, decided from the replica alone (no control-plane round trip):
connection tokens for the proxy, API tokens for the local connect endpoint."""

from __future__ import annotations

import hashlib
import time

from edge.replica import Replica
from sync import tokens
from sync.errors import BackendGone, Forbidden, Unauthorized
from sync.models import Scope
from sync.state import ApiTokenState, BackendState, SigningKeyState


def verify_connection_token(replica: Replica, token: str, now: float | None = None) -> tokens.ConnectionClaims:
    """Claims of a genuine, unexpired, unrevoked token; Unauthorized otherwise."""
    try:
        key = replica.signing_key(tokens.key_id_of(token))
        if key is None:
            raise Unauthorized("connection token signed with an unknown key")
        claims = tokens.verify(token, key.secret, time.time() if now is None else now)
    except tokens.TokenExpired as exc:
        raise Unauthorized("connection token expired") from exc
    except tokens.TokenInvalid as exc:
        raise Unauthorized("invalid connection token") from exc
    for revocation in replica.revocations(claims.backend_id):
        user = revocation.user_id
        if (user is None or user == claims.user) and claims.issued_at <= revocation.revoked_at.timestamp():
            raise Unauthorized("connection token revoked")
    return claims


def backend_for(replica: Replica, claims: tokens.ConnectionClaims) -> BackendState:
    backend = replica.backend(claims.backend_id)
    if backend is None or backend.is_terminated:
        raise BackendGone(f"backend {claims.backend_id} is gone")
    return backend


def active_signing_key(replica: Replica) -> SigningKeyState | None:
    keys = [k for k in replica.signing_keys() if k.retired_at is None]
    return max(keys, key=lambda k: k.created_at, default=None)


def api_caller(replica: Replica, authorization: str | None, *allowed: Scope) -> ApiTokenState:
    """The replicated API token behind `Authorization: Bearer …`, checked for scope."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip() or len(secret) > 512:
        raise Unauthorized("expected `Authorization: Bearer <token>`")
    digest = hashlib.sha256(secret.strip().encode()).hexdigest()
    token = replica.api_token(digest)
    if token is None or token.revoked_at is not None:
        raise Unauthorized("unknown or revoked token")
    scopes = set(token.scopes)
    if Scope.ADMIN not in scopes and not scopes.intersection(allowed):
        raise Forbidden("this token lacks the scope for this call")
    return token
