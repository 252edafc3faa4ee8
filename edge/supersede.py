"""Sending the clients of a superseded backend to the survivor of its key.

After a partition, the control plane keeps one backend per key (sync/offline.py) and terminates
the other with reason `superseded`. A request for the loser is answered `307` to a fresh URL of
the winner (a new connection token for the same user, on the winner's region edge), and its open
WebSockets are closed with CLOSE_SUPERSEDED and reason `superseded`.
"""

from __future__ import annotations

from aiohttp import web

from edge.offline_connect import fresh_token
from edge.replica import Replica
from sync.models import TerminationReason
from sync.state import BackendState

CLOSE_SUPERSEDED = 4000
"""WebSocket close code (application range) for a backend that lost its key to another."""
CLOSE_SUPERSEDED_REASON = "superseded"


def winner_url(replica: Replica, loser: BackendState, user: str | None, rest: str) -> str | None:
    """A fresh URL of the backend that superseded `loser` (same user, same path), or None."""
    if loser.termination_reason is not TerminationReason.SUPERSEDED or loser.key is None:
        return None
    winner = replica.live_backend_for_key(loser.key)
    region = replica.region(winner.region) if winner is not None else None
    token = fresh_token(replica, winner.id, user) if winner is not None and winner.id != loser.id else None
    if token is None or region is None:
        return None
    path = rest if rest.startswith("/") else f"/{rest}"
    return f"{region.edge_url.rstrip('/')}/{token}{path}"


def redirect_if_superseded(replica: Replica, backend: BackendState, user: str | None, rest: str) -> None:
    """Raise the 307 to the winner when `backend` was superseded and the winner is known."""
    location = winner_url(replica, backend, user, rest)
    if location is not None:
        raise web.HTTPTemporaryRedirect(location, headers={"Cache-Control": "no-store"})
