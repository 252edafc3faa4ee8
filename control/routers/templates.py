from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from control.http.deps import AdminCaller, ReadOnlyCaller, State
from control.services import templates
from sync.models import NAME_PATTERN, TemplateSpec, TemplateView

router = APIRouter(prefix="/v1/templates")

TemplateName = Annotated[str, Path(pattern=NAME_PATTERN)]


@router.put("/{name}", response_model=TemplateView)
async def put_template(name: TemplateName, body: TemplateSpec, state: State, caller: AdminCaller) -> TemplateView:
    return await templates.put_template(state.pool, name, body)


@router.get("", response_model=list[TemplateView])
async def list_templates(state: State, caller: ReadOnlyCaller) -> list[TemplateView]:
    return await templates.list_templates(state.pool, caller)


@router.get("/{name}", response_model=TemplateView)
async def get_template(name: TemplateName, state: State, caller: ReadOnlyCaller) -> TemplateView:
    return await templates.get_template(state.pool, name, caller)
