"""WebSocket close codes the edge sends when it ends a proxied WebSocket itself, and the reasons
that go with them: the contract clients read (meridian.client and the TypeScript SessionBackend).

1001 and 1011 are the standard "going away" and "server error"; the 4000 range is the
application's (RFC 6455 §7.4.2), with a short reason that names the case."""

from __future__ import annotations

CLOSE_GOING_AWAY = 1001
"""The edge shuts down, or the backend was stopped (idle, lifetime, requested)."""
CLOSE_BACKEND_GONE = 1011
"""The backend closed the connection or died under it."""
CLOSE_SUPERSEDED = 4000
"""The backend lost its key to another after a partition: reconnect through connect."""
REASON_SUPERSEDED = "superseded"
CLOSE_REVOKED = 4001
"""The connection token the socket was opened with was revoked (or its signing key withdrawn)."""
REASON_REVOKED = "revoked"
