from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from control.http.deps import AdminCaller, EdgeCaller, ObserverCaller, State
from control.services import drain, journal_replay, nodes
from sync.models import NODE_ID_PATTERN, DrainRequest, HeartbeatIn, HeartbeatOut, NodeDrainView
from sync.offline import ReplayIn, ReplayOut

router = APIRouter(prefix="/v1/nodes")

NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN)]


@router.post("/heartbeat", response_model=HeartbeatOut)
async def heartbeat(body: HeartbeatIn, state: State, caller: EdgeCaller) -> HeartbeatOut:
    return await nodes.heartbeat(state.pool, caller, body)


@router.post("/{node_id}/drain", response_model=NodeDrainView)
async def drain_node(
    node_id: NodeId, state: State, caller: AdminCaller, body: DrainRequest | None = None
) -> NodeDrainView:
    return await drain.set_draining(state.pool, node_id, (body or DrainRequest()).draining)


@router.get("/{node_id}/drain", response_model=NodeDrainView)
async def drain_status(node_id: NodeId, state: State, caller: ObserverCaller) -> NodeDrainView:
    return await drain.drain_status(state.pool, node_id)


@router.post("/{node_id}/journal", response_model=ReplayOut)
async def replay_journal(node_id: NodeId, body: ReplayIn, state: State, caller: EdgeCaller) -> ReplayOut:
    """Reconciliation: the node's journal of what it did while the control plane was unreachable."""
    return await journal_replay.replay(state.pool, caller, node_id, body)
