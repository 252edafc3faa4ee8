"""Request dependencies: the shared state and the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from control.services.auth import Caller, authenticate
from control.state import ControlState
from sync.models import Scope


def get_state(request: Request) -> ControlState:
    state: ControlState = request.app.state.control
    return state


State = Annotated[ControlState, Depends(get_state)]


async def get_caller(state: State, authorization: Annotated[str | None, Header()] = None) -> Caller:
    return await authenticate(state.pool, state.tokens, authorization)


AuthedCaller = Annotated[Caller, Depends(get_caller)]


def requires(*scopes: Scope) -> Any:
    """A dependency resolving the caller and checking its scope before the body is validated.
    `admin` always passes; `requires()` means admin only."""

    async def dependency(caller: AuthedCaller) -> Caller:
        caller.require(*scopes)
        return caller

    return Depends(dependency)


AdminCaller = Annotated[Caller, requires()]
ClientCaller = Annotated[Caller, requires(Scope.CLIENT)]
EdgeCaller = Annotated[Caller, requires(Scope.EDGE)]
ReaderCaller = Annotated[Caller, requires(Scope.CLIENT, Scope.EDGE)]
# Routes that change nothing: an observer may read whatever a client or an edge may read.
ReadOnlyCaller = Annotated[Caller, requires(Scope.CLIENT, Scope.EDGE, Scope.OBSERVER)]
# The fleet-wide views of the dashboard: admin or observer.
ObserverCaller = Annotated[Caller, requires(Scope.OBSERVER)]
