from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from control.http.deps import ClientCaller, EdgeCaller, ReadOnlyCaller, State
from control.services import backends
from control.services.events import status_events
from sync.errors import BadRequest
from sync.models import (
    BackendStatus,
    BackendView,
    Name,
    RevokeRequest,
    StatusReport,
    TerminateRequest,
)
from sync.validation import INT63_MAX, Key

router = APIRouter(prefix="/v1/backends")

BackendId = Annotated[str, Path(pattern=r"^bk-[A-Za-z0-9_-]{1,60}$")]


@router.get("", response_model=list[BackendView], response_model_exclude_none=True)
async def list_backends(
    state: State,
    caller: ReadOnlyCaller,
    key: Annotated[Key | None, Query()] = None,
    region: Annotated[Name | None, Query()] = None,
    status: Annotated[BackendStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[BackendView]:
    return await backends.list_backends(
        state.pool, caller, key=key, region=region, status=status.value if status else None, limit=limit
    )


@router.get("/{backend_id}", response_model=BackendView, response_model_exclude_none=True)
async def get_backend(backend_id: BackendId, state: State, caller: ReadOnlyCaller) -> BackendView:
    found = await backends.get_backend(state.pool, backend_id, caller)
    if not caller.is_admin:
        found.address = None
    return found


@router.post("/{backend_id}/terminate", response_model=BackendView, response_model_exclude_none=True)
async def terminate(
    backend_id: BackendId, state: State, caller: ClientCaller, body: TerminateRequest | None = None
) -> BackendView:
    return await backends.terminate(state.pool, backend_id, caller, hard=(body or TerminateRequest()).hard)


@router.post("/{backend_id}/revoke")
async def revoke(
    backend_id: BackendId, state: State, caller: ClientCaller, body: RevokeRequest | None = None
) -> dict[str, object]:
    return await backends.revoke(state.pool, backend_id, caller, (body or RevokeRequest()).user)


@router.post("/{backend_id}/status", response_model=BackendView, response_model_exclude_none=True)
async def report_status(backend_id: BackendId, body: StatusReport, state: State, caller: EdgeCaller) -> BackendView:
    """An edge reports one backend's status at once (heartbeats carry the same, later)."""
    if body.id != backend_id:
        raise BadRequest("body id differs from the path", fields={"id": "must equal the path's backend id"})
    return await backends.report_status(state.pool, caller, body)


@router.get("/{backend_id}/events")
async def events(
    backend_id: BackendId,
    state: State,
    caller: ReadOnlyCaller,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError as exc:
        raise BadRequest("Last-Event-ID must be an integer", fields={"Last-Event-ID": "not an integer"}) from exc
    if not 0 <= after <= INT63_MAX:
        raise BadRequest("Last-Event-ID is out of range", fields={"Last-Event-ID": "must be 0 to 2**63-1"})
    await backends.get_backend(state.pool, backend_id, caller)

    async def stream() -> AsyncIterator[bytes]:
        async for seq, event in status_events(state.pool, state.notifier, backend_id, after):
            yield b"id: %d\nevent: status\ndata: %s\n\n" % (seq, orjson.dumps(event))

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
