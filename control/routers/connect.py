from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from control.http.deps import ReaderCaller, State
from control.services import connect as connect_service
from control.services.auth import Caller, caller_by_id
from control.telemetry import connect_outcome
from sync.errors import BadRequest
from sync.models import ConnectRequest, ConnectResponse, Scope

router = APIRouter()

ARRIVAL_REGION_HEADER = "x-meridian-arrival-region"


def _valid_ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def client_ip_for(request: Request, body: ConnectRequest, caller: Caller, forwarded_for: str | None) -> str | None:
    """The user's IP for placement. Only admin/edge callers may speak for a user (body or
    X-Forwarded-For); a client-scoped caller is placed by its own address, whatever it claims."""
    peer = request.client.host if request.client else None
    trusted = caller.is_admin or Scope.EDGE in caller.scopes
    if trusted and body.client_ip is not None:
        ip = _valid_ip(body.client_ip)
        if ip is None:
            raise BadRequest("client_ip is not an IP address", fields={"client_ip": "not an IP address"})
        return ip
    if Scope.EDGE in caller.scopes and forwarded_for:
        ip = _valid_ip(forwarded_for.split(",")[0])
        if ip is not None:
            return ip
    return _valid_ip(peer)


@router.post("/v1/connect", response_model=ConnectResponse, response_model_exclude_none=True)
async def connect(
    request: Request,
    body: ConnectRequest,
    state: State,
    caller: ReaderCaller,
    explain: Annotated[bool, Query()] = False,
    x_forwarded_for: Annotated[str | None, Header()] = None,
    x_meridian_arrival_region: Annotated[str | None, Header()] = None,
    x_meridian_caller: Annotated[str | None, Header(max_length=64)] = None,
) -> ConnectResponse:
    is_edge = Scope.EDGE in caller.scopes
    owner = caller
    if is_edge and x_meridian_caller:
        # An edge forwarding a user's connect names the user's API token: it owns the backend, and its
        # confinement is checked here again (the edge checked it against its replica already).
        owner = await caller_by_id(state.pool, state.tokens, x_meridian_caller)
        owner.require(Scope.CLIENT, Scope.EDGE)
    ctx = connect_service.ConnectContext(
        caller=owner,
        client_ip=client_ip_for(request, body, caller, x_forwarded_for),
        arrival_region=x_meridian_arrival_region if is_edge else None,
        status_base_url=state.settings.public_url or str(request.base_url),
        default_region=state.settings.placement.default_region,
        explain=explain,
        for_edge=is_edge,
    )
    async with connect_outcome(request) as outcome:
        answer = await connect_service.connect(state.connect, body, ctx)
        outcome.value = "spawned" if answer.spawned else "existing"
    if not answer.placement.ranking:
        answer.placement.ranking = None
    return answer
