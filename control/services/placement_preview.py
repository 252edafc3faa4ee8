"""Placement preview: the decision `connect` would make for a new backend, without spawning one."""

from __future__ import annotations

import asyncpg

from control.placement import PlacementInput, Placer
from control.queries import template_names
from control.services.fleet import FleetViewCache
from sync.errors import TemplateUnknown
from sync.models import Location, PlacementPreview, PlacementPreviewRequest


async def preview(
    pool: asyncpg.Pool,
    placer: Placer,
    fleet_cache: FleetViewCache,
    req: PlacementPreviewRequest,
    default_region: str | None,
) -> PlacementPreview:
    if req.template is not None:
        async with pool.acquire() as conn:
            if await template_names.get(conn, req.template) is None:
                raise TemplateUnknown(f"no template named {req.template!r}", fields={"template": req.template})
    fleet = await fleet_cache.get(pool)
    # The same placer and fleet view connect uses, with the signals a user's connect would carry.
    decision = placer.place(
        PlacementInput(
            location=(req.location.lat, req.location.lon) if req.location else None,
            client_ip=req.client_ip,
            default_region=default_region or fleet.oldest_region,
        ),
        fleet.candidates,
    )
    origin = Location(lat=decision.origin[0], lon=decision.origin[1]) if decision.origin else None
    return PlacementPreview(**decision.to_wire(), origin=origin)
