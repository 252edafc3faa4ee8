"""Warm pools: each template with `warm_pool: N` has N started, ready, unclaimed backends on this
node (per node: the simplest rule to predict — N per edge, whatever the region's size), so a new
key's backend placed here claims one instead of starting a process.

A member is started like any backend but without a backend's identity (edge/executors/base.py
`backend_env`: `MERIDIAN_POOL_MEMBER`, no `MERIDIAN_BACKEND_ID`/`KEY`/`FENCING_TOKEN`/`BASE_PATH`)
and with a secret of its own. Claiming it is one `POST <claim_path>` carrying that secret in
`x-meridian-secret` and the backend's identity in the body; a 2xx within
`WARM_POOL_CLAIM_TIMEOUT_S` makes it the backend (the executor knows it by the backend's id from
then on), anything else discards it. The drone (edge/drone.py) decides when to claim; this module
keeps the pools full:

* members count against the node's capacity: the pool fills only while running backends plus
  members leave room, and a cold start on a full node stops a member to make room;
* while the node drains, unclaimed members are stopped and none are started;
* a member older than its template's `lifetime_limit_s` is replaced (a claimed backend's lifetime
  counts from its member's start: no process outlives the limit); idle rules begin at the claim;
* a member that dies, fails to start, or refuses a claim is replaced (with backoff when members
  keep failing to start);
* only templates a name points at are pooled; a template no longer named loses its pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from edge.executors import Executor, ExecutorError, PoolTag, SpawnRequest
from edge.replica import Replica
from sync.models import TemplateSpec, TerminationReason
from sync.routing import base_path
from sync.timing import BACKOFF_INITIAL_S, BACKOFF_MAX_S, WARM_POOL_CHECK_S, WARM_POOL_CLAIM_TIMEOUT_S

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PoolMember:
    id: str
    template_id: str
    spec: TemplateSpec
    secret: str
    started_at: float = field(default_factory=time.monotonic)
    address: str | None = None
    """Set once it answered its readiness probe: only then may it be claimed."""


@dataclass
class ClaimTimes:
    """Where a claim's time went (seconds), for spans, metrics and the benchmark."""

    post_s: float = 0.0
    members_tried: int = 0


class WarmPool:
    def __init__(
        self,
        *,
        node_id: str,
        region: str,
        replica: Replica,
        capacity: int,
        running: Callable[[], int],
        draining: Callable[[], bool] = lambda: False,
        check_s: float = WARM_POOL_CHECK_S,
    ) -> None:
        self.node_id = node_id
        self.region = region
        self.replica = replica
        self.capacity = capacity
        self._running = running
        self._draining = draining
        self._check_s = check_s
        self.executor: Executor | None = None
        self.members: dict[str, PoolMember] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failures: dict[str, int] = {}  # template id → members that failed to start in a row
        self._not_before: dict[str, float] = {}  # template id → no new member before this (backoff)
        self._session: aiohttp.ClientSession | None = None
        self._changed = asyncio.Event()  # replaced on every change: what `wait_until` waits on
        self.stopping: set[str] = set()
        """Members being stopped (discarded, drained, expired) whose process may still run."""

    # ---- what the drone and the heartbeat use ----------------------------------------------------

    def attach(self, executor: Executor) -> None:
        self.executor = executor

    def wake(self) -> None:
        self._wake.set()

    def size(self) -> int:
        """Members started or ready: what the pool takes of the node's capacity."""
        return len(self.members)

    def available(self) -> dict[str, int]:
        """Ready members by template id (reported by heartbeats: a placement tie-break)."""
        counts: dict[str, int] = {}
        for m in self.members.values():
            if m.address is not None:
                counts[m.template_id] = counts.get(m.template_id, 0) + 1
        return counts

    async def wait_until(self, predicate: Callable[[WarmPool], bool]) -> None:
        """Return once `predicate(pool)` holds (checked after every member change; tests, tools)."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def take(self, template_id: str) -> PoolMember | None:
        """A ready member of the template, no longer the pool's (the oldest: lifetime limits)."""
        ready = [m for m in self.members.values() if m.template_id == template_id and m.address is not None]
        if not ready:
            return None
        member = min(ready, key=lambda m: m.started_at)
        del self.members[member.id]
        self._wake.set()  # refill
        self._notify()
        return member

    async def claim(self, member: PoolMember, req: SpawnRequest, user: str | None, times: ClaimTimes) -> bool:
        """Give `member` the backend's identity; True once it is the backend. A member that does not
        take it (no 2xx in time) is stopped."""
        assert self.executor is not None and member.address is not None and member.spec.claim_path is not None
        body = {
            "backend_id": req.backend_id,
            "key": req.key,
            "fencing_token": req.fencing_token,
            "user": user,
            "secret": req.secret,
            "base_path": base_path(req.backend_id),
            "region": self.region,
        }
        started = time.perf_counter()
        status: int | str
        try:
            async with asyncio.timeout(WARM_POOL_CLAIM_TIMEOUT_S):
                url = f"http://{member.address}{member.spec.claim_path}"
                headers = {"x-meridian-secret": member.secret}
                async with self._client().post(url, json=body, headers=headers, allow_redirects=False) as r:
                    status = r.status
        except TimeoutError:
            status = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            status = type(exc).__name__
        finally:
            times.post_s += time.perf_counter() - started
            times.members_tried += 1
        claimed_req = replace(req, pool=PoolTag(member.id, self.node_id))
        if isinstance(status, int) and 200 <= status < 300 and await self.executor.rekey(member.id, claimed_req):
            return True
        log.warning("warm-pool member %s refused the claim for %s (%s): discarded", member.id, req.backend_id, status)
        await self._discard(member.id)
        return False

    def make_room(self) -> None:
        """A cold start is coming: if running backends and members fill the node, stop a member."""
        if self._running() + len(self.members) < self.capacity or not self.members:
            return
        member = min(self.members.values(), key=lambda m: (m.address is not None, m.started_at))
        del self.members[member.id]
        self._notify()
        self._discard_later(member.id)

    def on_exit(self, member_id: str) -> bool:
        """Executor callback for a process that ended: True when it was an (unclaimed) member."""
        member = self.members.pop(member_id, None)
        if member is None:
            return False
        if member.address is not None:
            log.warning("warm-pool member %s of %s ended; replacing it", member_id, member.template_id)
        self._wake.set()
        self._notify()
        return True

    # ---- keeping the pools full -----------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                self.reconcile()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._check_s):
                        await self._wake.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._session is not None:
                await self._session.close()

    def reconcile(self) -> None:
        """One pass: stop what is not wanted (drain, unnamed template, surplus, past lifetime),
        then start members while the node has room."""
        wanted = {} if self._draining() else self._wanted()
        now = time.monotonic()
        counts: dict[str, int] = {}
        for member in sorted(self.members.values(), key=lambda m: m.started_at, reverse=True):
            spec = wanted.get(member.template_id)
            lifetime = member.spec.lifetime_limit_s
            expired = lifetime is not None and now - member.started_at >= lifetime
            keep = spec is not None and counts.get(member.template_id, 0) < spec.warm_pool and not expired
            if keep:
                counts[member.template_id] = counts.get(member.template_id, 0) + 1
            else:
                del self.members[member.id]
                self._notify()
                self._discard_later(member.id, TerminationReason.LIFETIME if expired else TerminationReason.IDLE)
        for template_id, spec in wanted.items():
            for _ in range(spec.warm_pool - counts.get(template_id, 0)):
                if not self._may_start(template_id, now):
                    break
                self._start(template_id, spec)

    def _wanted(self) -> dict[str, TemplateSpec]:
        return {t.id: t.spec for t in self.replica.named_templates() if t.spec.warm_pool > 0}

    def _may_start(self, template_id: str, now: float) -> bool:
        room = self._running() + len(self.members) < self.capacity
        return room and self.executor is not None and now >= self._not_before.get(template_id, 0.0)

    def _start(self, template_id: str, spec: TemplateSpec) -> None:
        member = PoolMember(
            id=f"wp-{secrets.token_hex(8)}", template_id=template_id, spec=spec, secret=secrets.token_urlsafe(24)
        )
        self.members[member.id] = member
        self._spawn(self._run_start(member))

    async def _run_start(self, member: PoolMember) -> None:
        assert self.executor is not None
        req = SpawnRequest(
            backend_id=member.id,
            key=None,
            fencing_token=0,
            region=self.region,
            secret=member.secret,
            template=member.spec,
            template_id=member.template_id,
            pool=PoolTag(member.id, self.node_id),
        )
        try:
            address = await self.executor.start(req)
        except ExecutorError as exc:
            self.members.pop(member.id, None)
            self._notify()
            failures = self._failures[member.template_id] = self._failures.get(member.template_id, 0) + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (failures - 1))
            self._not_before[member.template_id] = time.monotonic() + delay
            log.warning("warm-pool member of %s did not start (%s); next try in %.1f s", member.template_id, exc, delay)
            return
        self._failures.pop(member.template_id, None)
        if self.members.get(member.id) is member:
            member.address = address
            self._notify()
        else:  # discarded while starting (drain, template renamed): it never serves anyone
            await self._discard(member.id)

    def _discard_later(self, member_id: str, reason: TerminationReason = TerminationReason.FAILED) -> None:
        self.stopping.add(member_id)  # at once: a waiter must not see it neither member nor stopping
        self._spawn(self._discard(member_id, reason))

    async def _discard(self, member_id: str, reason: TerminationReason = TerminationReason.FAILED) -> None:
        if self.executor is None:
            return
        self.stopping.add(member_id)
        try:
            await self.executor.stop(member_id, hard=True, reason=reason)
        except ExecutorError as exc:
            log.warning("could not stop warm-pool member %s: %s", member_id, exc)
        finally:
            self.stopping.discard(member_id)
            self._notify()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        return self._session
