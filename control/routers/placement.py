from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from control.http.deps import State, requires
from control.services import placement_preview
from control.services.auth import Caller
from sync.models import PlacementPreview, PlacementPreviewRequest, Scope

router = APIRouter(prefix="/v1/placement")

PreviewCaller = Annotated[Caller, requires(Scope.OBSERVER)]  # admin or observer


@router.post("/preview", response_model=PlacementPreview)
async def preview(body: PlacementPreviewRequest, state: State, caller: PreviewCaller) -> PlacementPreview:
    """The ranking `connect` would compute for a user at `location` (or `client_ip`); spawns nothing."""
    return await placement_preview.preview(
        state.pool, state.placer, state.connect.fleet, body, state.settings.placement.default_region
    )
