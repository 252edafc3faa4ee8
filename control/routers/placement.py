from __future__ import annotations

from fastapi import APIRouter

from control.http.deps import ObserverCaller, State
from control.services import placement_preview
from sync.models import PlacementPreview, PlacementPreviewRequest

router = APIRouter(prefix="/v1/placement")


@router.post("/preview", response_model=PlacementPreview)
async def preview(body: PlacementPreviewRequest, state: State, caller: ObserverCaller) -> PlacementPreview:
    """The ranking `connect` would compute for a user at `location` (or `client_ip`); spawns nothing."""
    return await placement_preview.preview(
        state.pool, state.placer, state.connect.fleet, body, state.settings.placement.default_region
    )
