from __future__ import annotations

from fastapi import APIRouter

from control.http.deps import State
from control.queries import system_version
from sync.models import Health

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz(state: State) -> Health:
    async with state.pool.acquire() as conn:
        row = await system_version.read(conn)
    return Health(status="ok", version=row["version"])
