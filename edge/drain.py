"""This node's drain, as the control plane last said it in a heartbeat answer: while draining,
backends without an open connection are stopped as idle (busy ones are left alone), so the node
empties as its users leave. New backends stop arriving because placement skips the node."""

from __future__ import annotations

import asyncio
import logging
import time

from edge.activity import Activity
from edge.drone import Drone
from sync.models import BackendStatus, TerminationReason
from sync.timing import DRAIN_IDLE_AFTER_S

log = logging.getLogger(__name__)


class DrainState:
    def __init__(self) -> None:
        self.draining = False
        self._started = asyncio.Event()

    def update(self, draining: bool) -> None:
        if draining != self.draining:
            log.info("node drain %s", "started" if draining else "ended")
        self.draining = draining
        if draining:
            self._started.set()
        else:
            self._started.clear()

    async def wait_draining(self) -> None:
        await self._started.wait()


def idle_backends(drone: Drone, activity: Activity, now: float) -> list[str]:
    """Ready backends idle for the drain's idle time (or their template's, if shorter)."""
    return [
        b.id
        for b in drone.local.values()
        if b.status is BackendStatus.READY
        and activity.idle_for(b.id, now) >= min(DRAIN_IDLE_AFTER_S, b.template.idle_timeout_s)
    ]


async def stop_idle_while_draining(drain: DrainState, drone: Drone, activity: Activity, check_s: float) -> None:
    """Runs for the edge's life: idle while not draining, stopping idle backends while draining."""
    stopping: set[asyncio.Task[None]] = set()
    try:
        while True:
            await drain.wait_draining()
            for backend_id in idle_backends(drone, activity, time.monotonic()):
                task = asyncio.create_task(drone.stop(backend_id, TerminationReason.IDLE))
                stopping.add(task)
                task.add_done_callback(stopping.discard)
            await asyncio.sleep(check_s)
    finally:
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
