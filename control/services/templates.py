"""Templates: content-addressed spawn specs behind stable names."""

from __future__ import annotations

import asyncpg

from control.queries import template_names, templates
from control.services.auth import Caller
from control.versioning import write_transaction
from sync.canonical import content_id
from sync.errors import NotFound
from sync.models import TemplateLimits, TemplateSpec, TemplateView
from sync.state import TemplateNameState, TemplateState


def template_id(spec: TemplateSpec) -> str:
    """The id of a spec's content. Fields left at their defaults are not part of it, so a field
    added to templates later (with a default) never changes the id of a template that exists."""
    return content_id("tp", spec.model_dump(mode="json", exclude_defaults=True))


async def put_template(pool: asyncpg.Pool, name: str, spec: TemplateSpec) -> TemplateView:
    """Idempotent: the same spec again changes nothing and does not move the version."""
    tid = template_id(spec)
    body = spec.model_dump(mode="json")
    async with write_transaction(pool) as tx:
        if await templates.insert_if_absent(tx.conn, tid, body):
            tx.put(TemplateState(id=tid, spec=spec))
        if await template_names.point(tx.conn, name, tid) is not None:
            tx.put(TemplateNameState(name=name, id=tid))
        row = await template_names.get(tx.conn, name)
    assert row is not None  # written just above, in this transaction
    return _view(row, with_spec=True)


async def get_template(pool: asyncpg.Pool, name: str, caller: Caller) -> TemplateView:
    """A template outside a confined caller's templates does not exist for it."""
    async with pool.acquire() as conn:
        row = await template_names.get(conn, name)
    if row is None or not caller.confinement.allows_template(name):
        raise NotFound(f"no template named {name!r}")
    return _view(row, with_spec=caller.is_admin)


async def list_templates(pool: asyncpg.Pool, caller: Caller) -> list[TemplateView]:
    async with pool.acquire() as conn:
        rows = await template_names.list_all(conn)
    allowed = caller.confinement.allows_template
    return [_view(r, with_spec=caller.is_admin) for r in rows if allowed(r["name"])]


def _view(row: asyncpg.Record, *, with_spec: bool) -> TemplateView:
    spec = TemplateSpec(**row["spec"])
    return TemplateView(
        name=row["name"],
        id=row["id"],
        executor=spec.executor,
        limits=TemplateLimits.model_validate(spec.model_dump(include=set(TemplateLimits.model_fields))),
        spec=spec if with_spec else None,
        updated_at=row["updated_at"],
    )
