"""Sending the clients of a superseded backend to the survivor of its key.

After a partition, the control plane keeps one backend per key (sync/offline.py) and terminates
the other with reason `superseded`. A request for the loser is answered `307` to a fresh URL of
the winner (a new connection token for the same user, on the winner's region edge), and its open
WebSockets are closed with sync.close_codes.CLOSE_SUPERSEDED and reason `superseded`.
"""

from __future__ import annotations

import re

from aiohttp import web

from edge.offline_connect import fresh_token
from edge.replica import Replica
from sync.models import TerminationReason
from sync.state import BackendState


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


_UNSAFE = re.compile(r"[^\x21-\x7e]")


class SupersededRedirect(Exception):
    """The request's backend was superseded: send the client to `location` (the winner)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location

    def response(self) -> web.Response:
        return web.Response(status=307, headers={"Location": self.location, "Cache-Control": "no-store"})

    def raw(self) -> bytes:
        """The same answer as HTTP/1.1 bytes (for the raw-transport fast path)."""
        return (
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %b\r\nCache-Control: no-store\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n" % self.location.encode("ascii")
        )


def redirect_if_superseded(replica: Replica, backend: BackendState, user: str | None, rest: str) -> None:
    """Raise SupersededRedirect to the winner when `backend` was superseded and the winner is known."""
    location = winner_url(replica, backend, user, rest)
    if location is not None and not _UNSAFE.search(location):  # nothing a client sent reaches a header raw
        raise SupersededRedirect(location)
