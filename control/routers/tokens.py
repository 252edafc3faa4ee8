from __future__ import annotations

from fastapi import APIRouter

from control.http.deps import AdminCaller, State
from control.services import auth, signing
from sync.models import TokenIn, TokenView

router = APIRouter(prefix="/v1")


@router.post("/tokens", response_model=TokenView, status_code=201)
async def create_token(body: TokenIn, state: State, caller: AdminCaller) -> TokenView:
    return await auth.issue_token(state.pool, body)


@router.post("/signing-keys/rotate")
async def rotate_signing_key(state: State, caller: AdminCaller) -> dict[str, str]:
    return {"id": await signing.rotate(state.pool, state.keyring)}
