from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from control.http.deps import ObserverCaller, State
from control.services.fleet_events import fleet_events

router = APIRouter(prefix="/v1/fleet")


@router.get("/events")
async def events(state: State, caller: ObserverCaller) -> StreamingResponse:
    """Server-Sent Events for the dashboard: `regions` ({version, regions}) and `backends`
    ({version, backends}, the most recent 500), each sent first and then whenever it changed."""
    return StreamingResponse(
        fleet_events(state.pool, state.notifier, caller),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
