from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from control.http.deps import AdminCaller, EdgeCaller, ObserverCaller, State
from control.services import drain, nodes
from sync.models import NODE_ID_PATTERN, DrainRequest, HeartbeatIn, HeartbeatOut, NodeDrainView

router = APIRouter(prefix="/v1/nodes")

NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN)]


@router.post("/heartbeat", response_model=HeartbeatOut)
async def heartbeat(body: HeartbeatIn, state: State, caller: EdgeCaller) -> HeartbeatOut:
    return await nodes.heartbeat(state.pool, body)


@router.post("/{node_id}/drain", response_model=NodeDrainView)
async def drain_node(
    node_id: NodeId, state: State, caller: AdminCaller, body: DrainRequest | None = None
) -> NodeDrainView:
    return await drain.set_draining(state.pool, node_id, (body or DrainRequest()).draining)


@router.get("/{node_id}/drain", response_model=NodeDrainView)
async def drain_status(node_id: NodeId, state: State, caller: ObserverCaller) -> NodeDrainView:
    return await drain.drain_status(state.pool, node_id)
