from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from control.http.deps import AdminCaller, ClientCaller, State
from control.services import auth, signing
from sync.models import TokenIn, TokenView

router = APIRouter(prefix="/v1")

TokenId = Annotated[str, Path(pattern=r"^tk-[A-Za-z0-9_-]{1,60}$")]


@router.post("/tokens", response_model=TokenView, response_model_exclude_none=True, status_code=201)
async def create_token(body: TokenIn, state: State, caller: ClientCaller) -> TokenView:
    """Admin: any token. A client token: a client token confined at least as narrowly as itself."""
    return await auth.issue_token(state.pool, caller, body)


@router.get("/tokens", response_model=list[TokenView], response_model_exclude_none=True)
async def list_tokens(state: State, caller: ClientCaller) -> list[TokenView]:
    """Admin: every token. A client token: itself and the tokens minted under it. Never the secrets."""
    return await auth.list_tokens(state.pool, caller)


@router.delete("/tokens/{token_id}", response_model=TokenView, response_model_exclude_none=True)
async def delete_token(token_id: TokenId, state: State, caller: ClientCaller) -> TokenView:
    """Revoke the token and every token minted under it; every edge refuses them within a second."""
    return await auth.delete_token(state.pool, state.tokens, caller, token_id)


@router.post("/signing-keys/rotate")
async def rotate_signing_key(state: State, caller: AdminCaller) -> dict[str, str]:
    return {"id": await signing.rotate(state.pool, state.keyring)}
