"""`connect` answered by the edge alone: from what it knows (its replica, the backends its drone
runs), and — while the control plane is unreachable — by spawning the key on this node.

An offline spawn gets a provisional fencing token strictly greater than any this edge has seen for
the key (sync/offline.py), is journaled and fsynced before the answer, and answers
`placement.reason: "offline"`. Concurrent connects of one key share one spawn (a per-key lock).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

from edge.access import active_signing_key
from edge.drone import Drone
from edge.replica import Replica
from sync import tokens
from sync.errors import ControlPlaneUnreachable, KeyHeld, NoCapacity, TemplateUnknown
from sync.ids import new_id
from sync.models import BackendStatus, ConnectRequest
from sync.offline import node_tag, provisional_token
from sync.state import ApiTokenState, BackendState
from sync.timing import CONNECTION_TOKEN_TTL_S


def fresh_token(replica: Replica, backend_id: str, user: str | None) -> str | None:
    """A new connection token for the backend, signed with the active replicated key (None: none yet)."""
    key = active_signing_key(replica)
    if key is None:
        return None
    return tokens.sign(tokens.claims_now(backend_id, user, CONNECTION_TOKEN_TTL_S), key.id, key.secret)


def connect_answer(
    replica: Replica,
    backend: BackendState,
    status: BackendStatus,
    *,
    user: str | None,
    spawned: bool,
    reason: str,
    control_url: str,
    fallback_edge_url: str,
) -> dict[str, Any] | None:
    """The connect answer for `backend` with a fresh connection token; None when this edge cannot
    sign one (no signing key replicated yet)."""
    token = fresh_token(replica, backend.id, user)
    if token is None:
        return None
    region = replica.region(backend.region)
    edge_url = (region.edge_url if region is not None else fallback_edge_url).rstrip("/")
    return {
        "backend_id": backend.id,
        "key": backend.key,
        "spawned": spawned,
        "status": status.value,
        "region": backend.region,
        "edge_url": edge_url,
        "url": f"{edge_url}/{token}/",
        "token": token,
        "fencing_token": backend.fencing_token,
        "status_url": f"{control_url.rstrip('/')}/v1/backends/{backend.id}",
        "placement": {"region": backend.region, "reason": reason, "distance_km": 0.0 if spawned else None},
    }


class OfflineConnect:
    def __init__(
        self,
        *,
        replica: Replica,
        drone: Drone,
        node_id: str,
        region: str,
        capacity: int,
        control_url: str,
        edge_url: str,
    ) -> None:
        self.replica = replica
        self.drone = drone
        self.node_id = node_id
        self.region = region
        self.capacity = capacity
        self.control_url = control_url
        self.edge_url = edge_url
        self._locks: dict[str, asyncio.Lock] = {}
        self.spawns = 0

    def _answer(
        self, backend: BackendState, status: BackendStatus, user: str | None, *, spawned: bool, reason: str
    ) -> dict[str, Any]:
        answer = connect_answer(
            self.replica,
            backend,
            status,
            user=user,
            spawned=spawned,
            reason=reason,
            control_url=self.control_url,
            fallback_edge_url=self.edge_url,
        )
        if answer is None:
            raise ControlPlaneUnreachable("this edge has no signing key yet; retry", retry_after_s=2.0)
        return answer

    def known(self, body: ConnectRequest) -> dict[str, Any] | None:
        """The key's live backend as this edge knows it (its own drone first, then its replica)."""
        if body.key is None:
            return None
        local = self.drone.live_for_key(body.key)
        backend = local.state if local is not None else self.replica.live_backend_for_key(body.key)
        if backend is None:
            return None
        if backend.template_name != body.template:
            raise KeyHeld(
                f"key {backend.key!r} is held by a backend of template {backend.template_name!r}",
                fields={"key": backend.key, "template": backend.template_name, "backend_id": backend.id},
            )
        status = local.status if local is not None else backend.status
        return self._answer(backend, status, body.user, spawned=False, reason="existing")

    async def connect(self, body: ConnectRequest, caller: ApiTokenState) -> dict[str, Any]:
        """Answer from what this edge knows, else spawn here (the control plane is unreachable)."""
        if body.key is None:
            return await self._spawn(body, caller)
        lock = self._locks.setdefault(body.key, asyncio.Lock())
        try:
            async with lock:
                return self.known(body) or await self._spawn(body, caller)
        finally:
            if not lock.locked() and not lock._waiters:
                self._locks.pop(body.key, None)

    async def _spawn(self, body: ConnectRequest, caller: ApiTokenState) -> dict[str, Any]:
        template = self.replica.template_by_name(body.template)
        if template is None:
            raise TemplateUnknown(f"no template named {body.template!r}", fields={"template": body.template})
        if self.drone.running() >= self.capacity:
            raise NoCapacity("this edge is full and the control plane is unreachable", retry_after_s=2.0)
        now = datetime.now(UTC)
        backend = BackendState(
            id=new_id("bk"),
            key=body.key,
            template_name=body.template,
            template_id=template.id,
            region=self.region,
            node_id=self.node_id,
            status=BackendStatus.STARTING,
            fencing_token=self._token(body.key),
            owner_token_id=caller.token_id,
            user_id=body.user,
            secret=secrets.token_urlsafe(24),
            created_at=now,
            status_changed_at=now,
        )
        local = await self.drone.start_offline(backend, template.spec)
        self.spawns += 1
        return self._answer(backend, local.status, body.user, spawned=True, reason="offline")

    def _token(self, key: str | None) -> int:
        """Greater than any fencing token this edge has seen for the key; tagged with this node."""
        node = self.replica.node(self.node_id)
        tag = node_tag(node.ordinal if node is not None else None, self.node_id)
        if key is None:
            return provisional_token(0, tag)
        row = self.replica.key(key)
        seen = max(row.fencing_token if row is not None else 0, self._journaled(key))
        return provisional_token(seen, tag)

    def _journaled(self, key: str) -> int:
        journal = self.drone.journal
        return journal.greatest_token(key) if journal is not None else 0
