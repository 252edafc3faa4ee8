from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from control.http.deps import AdminCaller, ReadOnlyCaller, State
from control.services import regions
from sync.models import NAME_PATTERN, RegionIn, RegionView

router = APIRouter(prefix="/v1/regions")

RegionName = Annotated[str, Path(pattern=NAME_PATTERN)]


@router.put("/{name}", response_model=RegionView)
async def put_region(name: RegionName, body: RegionIn, state: State, caller: AdminCaller) -> RegionView:
    return await regions.put_region(state.pool, name, body)


@router.get("", response_model=list[RegionView])
async def list_regions(state: State, caller: ReadOnlyCaller) -> list[RegionView]:
    return await regions.list_regions(state.pool)
