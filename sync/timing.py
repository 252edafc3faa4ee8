"""Every timing constant of the system, in seconds, in one place.

`tests/unit/test_timing.py` asserts the orderings these values must keep; change them together.
"""

from __future__ import annotations

HEARTBEAT_INTERVAL_S: float = 2.0
"""How often an edge node reports itself and its backends to the control plane."""

NODE_LOST_AFTER_S: float = 10.0
"""An edge node silent this long is unhealthy: it gets no new backends."""

KEY_FAILOVER_AFTER_S: float = 300.0
"""An edge unreachable this long loses its keys to other regions (the fencing token guards storage)."""

SYNC_LONG_POLL_S: float = 25.0
"""How long an edge's `changes` request waits on the control plane when nothing changed."""

SYNC_FALLBACK_POLL_S: float = 1.0
"""How often a waiting long-poll re-reads the version if no LISTEN/NOTIFY wake-up arrived."""

BACKOFF_INITIAL_S: float = 0.5
BACKOFF_MAX_S: float = 30.0

TOKEN_REVOCATION_PROPAGATION_S: float = 1.0
"""Upper bound promised for a revoked connection token to stop working at every edge, and for what
was opened with it to close (WebSockets with 4001 `revoked`, streaming responses cut)."""

CONNECTION_TOKEN_TTL_S: float = 24 * 3600.0
"""Lifetime of a connection token issued by `connect`."""

AUTH_CACHE_TTL_S: float = 1.0
"""How long the control plane trusts a looked-up API token before reading it again: a token deleted
at another control-plane process is refused here within this (no longer than revocation takes)."""

DB_RETRY_AFTER_S: float = 2.0
"""`Retry-After` sent with 503 while the database is unreachable."""

TERMINATED_RETENTION_S: float = 3600.0
"""How long a terminated backend stays in sync snapshots (and in edge replicas) after it ended."""

LOG_CHECK_S: float = 1.0
"""How often an edge rotates backend logs that outgrew their cap and removes expired ones."""

LOG_FOLLOW_POLL_S: float = 0.2
"""How often a followed backend log (`GET /v1/backends/{id}/logs?follow=true`) is read for more."""

METRICS_REFRESH_S: float = 10.0
"""How often the control plane re-reads its fleet gauges while exporting metrics over OTLP (a
`/metrics` scrape reads them itself)."""

METRICS_READ_TIMEOUT_S: float = 2.0
"""Longest a read of the fleet gauges may take; past it the previous numbers are served."""

TELEMETRY_SHUTDOWN_S: float = 2.0
"""Longest a stopping process waits for its last telemetry export (a dead endpoint must not hold it up)."""

REQUEST_HEAD_TIMEOUT_S: float = 10.0
"""An edge closes a client connection whose request head is not complete this long after it began."""

KEEPALIVE_IDLE_S: float = 75.0
"""An edge closes a kept-alive client connection idle this long between requests."""

CONTROL_CLIENT_KEEPALIVE_S: float = 15.0
"""An edge drops a pooled connection to the control plane idle this long (aiohttp's default)."""

CONTROL_SERVER_KEEPALIVE_S: float = 75.0
"""The control plane closes a kept-alive connection idle this long. Longer than the edges' client
keep-alive, so an edge never reuses a connection the server is closing at that moment (with
uvicorn's default of 5 s, a burst's pooled connections were reused as they were closed: heartbeats
and long-polls failed with "server disconnected" and edges briefly went offline)."""

DRAIN_IDLE_AFTER_S: float = 10.0
"""On a draining node, a backend with no open connection this long is stopped (sooner than its
template's idle timeout when that is longer): draining empties a node as fast as its users allow."""

FLEET_EVENTS_CHECK_S: float = 1.0
"""How often the dashboard's fleet stream re-reads node health and load when the version stands still."""

FLEET_EVENTS_MIN_INTERVAL_S: float = 0.5
"""The fleet stream reads the state at most this often, however fast versions move (one read per burst)."""

FLEET_EVENTS_KEEPALIVE_S: float = 15.0
"""The fleet stream sends a comment line after this much silence, so proxies keep it open."""

EXIT_DRAIN_CHECK_S: float = 0.2
"""How often an edge draining itself before it exits looks whether it is empty yet."""

DISCOVERY_MIN_TTL_S: float = 5.0
"""Shortest time a DNS SRV answer for the control plane is kept (a TTL of 0 would mean a query per call)."""

DISCOVERY_MAX_TTL_S: float = 300.0
"""Longest time a DNS SRV answer is kept, whatever its TTL says: moved control planes are found again."""

DISCOVERY_RETRY_S: float = 10.0
"""After a failed DNS lookup, how long the last good answer is used before asking again (each
attempt against a silent DNS server costs the calls waiting on it up to the lookup timeout)."""

DISCOVERY_LOOKUP_TIMEOUT_S: float = 1.0
"""How long one DNS query waits for an answer before c-ares tries again (twice in all)."""

STATUS_STREAM_KEEPALIVE_S: float = 15.0
"""An edge's browser status stream (`GET /v1/status/{token}`) sends a comment after this much
silence, so proxies keep it open; it also re-checks the token's expiry then."""

CONTROL_PROBE_CONNECT_S: float = 1.0
"""While sync counts the control plane as unreachable, a connect still tries it first (it may be
back before sync has noticed), dialling for at most this long before it answers offline."""

CONTROL_PROBE_QUIET_S: float = 1.0
"""After a call to the control plane timed out, connects go offline at once for this long instead of
each waiting out a dial (a refused dial costs nothing and never makes connects skip the try)."""

RECONCILE_WITHIN_S: float = 5.0
"""Promise: once the control plane answers again, every edge's journal is reconciled within this
(an edge notices through its next heartbeat, then replays)."""

EMBEDDED_DB_RESTART_MAX_S: float = 5.0
"""Longest pause between attempts to restart a dead embedded PostgreSQL (bounded backoff)."""

EMBEDDED_DB_RECOVERY_S: float = 10.0
"""Promise: the control plane serves again this soon after its embedded PostgreSQL died."""

WARM_POOL_CLAIM_TIMEOUT_S: float = 2.0
"""How long an edge waits for a warm-pool member to answer its claim before it discards the member
and starts the backend cold (or claims the next member)."""

WARM_POOL_CHECK_S: float = 1.0
"""How often an edge checks its warm pools (fill, lifetime, drain) when nothing woke it sooner."""

WARM_POOL_REFILL_QUIET_S: float = 1.0
"""A warm pool that still holds at least half its members refills only once no member of it was
claimed for this long (claims in a burst are not slowed by the processes replacing them)."""
