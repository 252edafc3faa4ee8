from __future__ import annotations

from fastapi import APIRouter

from control.http.deps import EdgeCaller, State
from control.services import nodes
from sync.models import HeartbeatIn, HeartbeatOut

router = APIRouter(prefix="/v1/nodes")


@router.post("/heartbeat", response_model=HeartbeatOut)
async def heartbeat(body: HeartbeatIn, state: State, caller: EdgeCaller) -> HeartbeatOut:
    return await nodes.heartbeat(state.pool, body)
