"""Connection tokens: HMAC-SHA256 over (backend id, user, expiry), verifiable by any edge offline.

Format: `v1.<key id>.<payload>.<signature>`, payload and signature base64url without padding.
Every character is URL-path safe, so the token can be the first path segment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

MAX_TOKEN_LENGTH = 1024
_TOKEN_SHAPE = re.compile(r"^v1\.[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,700}\.[A-Za-z0-9_-]{43}$")


class TokenInvalid(Exception):
    """The token is malformed, signed with an unknown key, or its signature does not match."""


class TokenExpired(TokenInvalid):
    """The token was genuine but its expiry has passed."""


@dataclass(frozen=True)
class ConnectionClaims:
    backend_id: str
    user: str | None
    expires_at: int
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_signing_secret() -> str:
    return _b64(secrets.token_bytes(32))


def sign(claims: ConnectionClaims, key_id: str, secret: str) -> str:
    payload = _b64(
        json.dumps(
            {"b": claims.backend_id, "u": claims.user, "e": claims.expires_at, "i": claims.issued_at},
            separators=(",", ":"),
        ).encode()
    )
    signed = f"v1.{key_id}.{payload}"
    mac = hmac.new(_unb64(secret), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64(mac)}"


def key_id_of(token: str) -> str:
    """The signing key id a token names; raises TokenInvalid when the token is not token-shaped."""
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_SHAPE.match(token):
        raise TokenInvalid("malformed token")
    return token.split(".", 2)[1]


def verify(token: str, secret: str, now: float) -> ConnectionClaims:
    key_id_of(token)
    signed, _, mac_text = token.rpartition(".")
    try:
        expected = hmac.new(_unb64(secret), signed.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac_text)):
            raise TokenInvalid("bad signature")
        raw = json.loads(_unb64(signed.split(".")[2]))
    except (binascii.Error, ValueError) as exc:
        raise TokenInvalid("malformed token") from exc
    if not isinstance(raw, dict):
        raise TokenInvalid("malformed token")
    backend_id, user, expires_at, issued_at = raw.get("b"), raw.get("u"), raw.get("e"), raw.get("i")
    if not isinstance(backend_id, str) or not isinstance(expires_at, int) or not isinstance(issued_at, int):
        raise TokenInvalid("malformed token")
    if user is not None and not isinstance(user, str):
        raise TokenInvalid("malformed token")
    if expires_at <= now:
        raise TokenExpired("token expired")
    return ConnectionClaims(backend_id=backend_id, user=user, expires_at=expires_at, issued_at=issued_at)
