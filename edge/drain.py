"""This node's drain: asked by an operator (the control plane says so in heartbeat answers) or
begun by the edge itself when told to exit (SIGTERM with `shutdown_drain_s`; it says so in its
heartbeats). While draining, backends without an open connection are stopped as idle (busy ones
are left alone), so the node empties as its users leave; new backends stop arriving because
placement skips the node."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from edge.activity import Activity
from edge.drone import Drone
from sync.models import BackendStatus, TerminationReason
from sync.timing import DRAIN_IDLE_AFTER_S, EXIT_DRAIN_CHECK_S

log = logging.getLogger(__name__)


class ExitPlan:
    """What a clean exit does with this node's backends: stop them (the default; their keys are
    free at once), or keep them running for the next edge process on this data directory to adopt
    (an upgrade or restart: `on_exit = keep`, or SIGUSR2)."""

    def __init__(self, keep_backends: bool) -> None:
        self.keep_backends = keep_backends


class DrainState:
    def __init__(self) -> None:
        self.requested = False
        """An operator drains this node (from the last heartbeat answer)."""
        self.shutting_down = False
        """This edge drains itself before it exits."""
        self._started = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self.requested or self.shutting_down

    def update(self, requested: bool) -> None:
        if requested != self.requested:
            log.info("node drain %s by the control plane", "started" if requested else "ended")
        self.requested = requested
        self._sync_event()

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self._sync_event()

    def _sync_event(self) -> None:
        if self.draining:
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


async def drain_before_exit(
    drain: DrainState, drone: Drone, announce: Callable[[], Awaitable[None]], timeout_s: float
) -> bool:
    """Drain this node before it exits: say so to the control plane (`announce` sends a heartbeat)
    so it places nothing more here, let idle backends stop, and wait up to `timeout_s` for the busy
    ones to finish. True when the node emptied in time; what is left is stopped by the shutdown."""
    drain.begin_shutdown()
    log.info("draining before exit (up to %.0f s): %d backend(s) running", timeout_s, drone.running())
    await announce()
    deadline = time.monotonic() + timeout_s
    while drone.running() > 0:
        if time.monotonic() >= deadline:
            log.warning("drain before exit timed out with %d backend(s) still busy", drone.running())
            return False
        await asyncio.sleep(min(EXIT_DRAIN_CHECK_S, max(0.0, deadline - time.monotonic())))
    return True
