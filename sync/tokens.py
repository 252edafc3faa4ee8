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
import time
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
    """Seconds since the epoch."""
    issued_at_us: int = 0
    """Microseconds since the epoch (0: unknown, the token predates it): what a revocation compares
    with, so a token issued right after a revoke in the same second still works."""

    @property
    def issued_us(self) -> int:
        """When the token was issued, in microseconds; a token without it counts as issued at the start
        of its second (so a revoke in that second refuses it: the safe side)."""
        return self.issued_at_us or self.issued_at * 1_000_000


def claims_now(backend_id: str, user: str | None, ttl_s: float, now_ns: int | None = None) -> ConnectionClaims:
    """Claims of a token issued now, valid for `ttl_s` seconds."""
    issued_us = (time.time_ns() if now_ns is None else now_ns) // 1000
    issued_at = issued_us // 1_000_000
    return ConnectionClaims(backend_id, user, issued_at + int(ttl_s), issued_at, issued_us)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_signing_secret() -> str:
    return _b64(secrets.token_bytes(32))


def sign(claims: ConnectionClaims, key_id: str, secret: str) -> str:
    payload = _b64(
        json.dumps(
            {"b": claims.backend_id, "u": claims.user, "e": claims.expires_at, "i": claims.issued_at}
            | ({"m": claims.issued_at_us} if claims.issued_at_us else {}),
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
    issued_at_us = raw.get("m", 0)
    if not isinstance(issued_at_us, int) or isinstance(issued_at_us, bool) or issued_at_us < 0:
        raise TokenInvalid("malformed token")
    if expires_at <= now:
        raise TokenExpired("token expired")
    return ConnectionClaims(backend_id, user, expires_at, issued_at, issued_at_us)
