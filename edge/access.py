"""Who may do what at the edge, decided from the replica alone (no control-plane round trip):
connection tokens for the proxy, API tokens for the local connect endpoint."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.replica import Replica
from sync import tokens
from sync.confinement import Confinement, expired
from sync.errors import BackendGone, Forbidden, Unauthorized
from sync.models import ChangeKind, ConnectRequest, Scope


def verify_connection_token(replica: Replica, token: str, now: float | None = None) -> tokens.ConnectionClaims:
    """Claims of a genuine, unexpired, unrevoked token; Unauthorized otherwise."""
    try:
        key = replica.signing_key(tokens.key_id_of(token))
        if key is None:
            raise Unauthorized("connection token signed with an unknown key")
        claims = tokens.verify(token, key["secret"], time.time() if now is None else now)
    except tokens.TokenExpired as exc:
        raise Unauthorized("connection token expired") from exc
    except tokens.TokenInvalid as exc:
        raise Unauthorized("invalid connection token") from exc
    for revocation in replica.revocations(claims.backend_id):
        user = revocation.get("user_id")
        if (user is None or user == claims.user) and claims.issued_us <= _epoch_us(revocation["revoked_at"]):
            raise Unauthorized("connection token revoked")
    return claims


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(value: str) -> int:
    """Microseconds since the epoch, exactly (a float timestamp would round them)."""
    return (datetime.fromisoformat(value) - _EPOCH) // timedelta(microseconds=1)


def backend_for(replica: Replica, claims: tokens.ConnectionClaims) -> dict[str, Any]:
    backend = replica.backend(claims.backend_id)
    if backend is None or backend["status"] == "terminated":
        raise BackendGone(f"backend {claims.backend_id} is gone")
    return backend


def active_signing_key(replica: Replica) -> dict[str, Any] | None:
    keys = [k for k in replica.objects(ChangeKind.SIGNING_KEY).values() if not k.get("retired_at")]
    return max(keys, key=lambda k: k["created_at"], default=None)


def api_caller(replica: Replica, authorization: str | None, *allowed: Scope) -> dict[str, Any]:
    """The replicated API token behind `Authorization: Bearer …`, checked for scope."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip() or len(secret) > 512:
        raise Unauthorized("expected `Authorization: Bearer <token>`")
    digest = hashlib.sha256(secret.strip().encode()).hexdigest()
    token = replica.get(ChangeKind.API_TOKEN, digest)
    if token is None or token.get("revoked_at") or expired(token.get("expires_at"), datetime.now(UTC)):
        raise Unauthorized("unknown, expired or revoked token")
    scopes = set(token["scopes"])
    if Scope.ADMIN.value not in scopes and not scopes.intersection(s.value for s in allowed):
        raise Forbidden("this token lacks the scope for this call")
    return token


def confined_connect(token: dict[str, Any], body: ConnectRequest) -> ConnectRequest:
    """The connect a token may make: Forbidden outside its key prefix or templates, or for another
    user than the one it is bound to; a bound token's connection tokens are for its user."""
    user = Confinement.from_replicated(token).connect_user(body.key, body.template, body.user)
    return body if user == body.user else body.model_copy(update={"user": user})
