"""Replaying the journal: once the control plane answers again, the pending entries (offline
spawns, status changes made while it was unreachable) go to `POST /v1/nodes/{id}/journal`, in
order, in pages; each page taken is acknowledged in the journal. The control plane applies them
idempotently (a page sent twice, e.g. after a lost answer, changes nothing the second time), and
what it decided (adopted, superseded) reaches this edge through the replica like any change.
"""

from __future__ import annotations

import asyncio
import logging

from edge.control_client import ControlClient
from edge.journal import Journal
from sync.backoff import Backoff
from sync.errors import MeridianError
from sync.loop import SyncLoop
from sync.offline import MAX_REPLAY_ENTRIES, ReplayIn, ReplayOutcome

log = logging.getLogger(__name__)


class JournalReplayer:
    def __init__(self, *, journal: Journal, control: ControlClient, loop: SyncLoop, node_id: str) -> None:
        self.journal = journal
        self.control = control
        self.loop = loop
        self.node_id = node_id
        self._backoff = Backoff()
        self.replayed = 0
        self.superseded: list[str] = []

    async def run(self) -> None:
        while True:
            await self.journal.wait_pending()
            await self.loop.wait_until(lambda loop: loop.reachable)
            try:
                await self.replay_pending()
                self._backoff.reset()
            except MeridianError as exc:
                delay = self._backoff.next_delay(exc.retry_after_s or 0.0)
                log.warning("journal replay failed (%s); retrying in %.2fs", exc.message, delay)
                await asyncio.sleep(delay)

    async def replay_pending(self) -> int:
        """Send every pending entry; returns how many the control plane took."""
        taken = 0
        while entries := self.journal.pending_entries(MAX_REPLAY_ENTRIES):
            answer = await self.control.replay(self.node_id, ReplayIn(entries=entries))
            for result in answer.results:
                if result.outcome is ReplayOutcome.SUPERSEDED:
                    self.superseded.append(result.backend_id)
                    log.warning("offline backend %s superseded by %s", result.backend_id, result.winner_id)
            await self.journal.ack(entries[-1].seq)
            taken += len(entries)
        self.replayed += taken
        if taken:
            log.info("journal: %d entries replayed to the control plane", taken)
        return taken
