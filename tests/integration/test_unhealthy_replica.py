"""An edge whose replica directory can be neither opened nor rebuilt (here: a file where the
directory should be, which no permission bit hides from root): the edge still starts, says it is
unhealthy in `/healthz` and in its heartbeat, placement sends it no backends, and once the
directory can be written again a snapshot makes it healthy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import httpx

from edge import keys
from edge.app import send_heartbeat, start_edge
from edge.settings import EdgeSettings
from tests.conftest import RunningControl
from tests.helpers import DEMO_TEMPLATE, add_region, heartbeat, version
from tests.integration.edge_support import free_port

DUBLIN = {"lat": 53.35, "lon": -6.26}


async def _healthz(port: int) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
        return r.status, await r.json()


async def test_an_edge_whose_replica_cannot_be_opened_is_unhealthy_and_gets_no_backends(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str, tmp_path: Path
) -> None:
    for region in ("eu-west", "us-east"):
        await add_region(admin, region)
    assert (await admin.put("/v1/templates/demo", json=DEMO_TEMPLATE)).status_code == 200
    assert (await heartbeat(control.url, edge_token, "nd-us-east", "us-east")).status_code == 200
    data_dir = tmp_path / "eu-west"
    data_dir.mkdir()
    (data_dir / "replica").write_text("not a directory")
    settings = EdgeSettings(
        region="eu-west", control_url=control.url, token=edge_token, port=free_port(), data_dir=data_dir
    )
    edge = await start_edge(settings)
    try:
        status, body = await _healthz(edge.port)
        assert status == 503 and body["status"] == "unhealthy"
        assert "cannot be opened or rebuilt" in body["reason"]
        await send_heartbeat(edge.app)
        control.state.connect.fleet.invalidate()
        preview = (await admin.post("/v1/placement/preview", json={"location": DUBLIN})).json()
        (eu,) = [row for row in preview["ranking"] if row["name"] == "eu-west"]
        assert (eu["eligible"], eu["why_not"]) == (False, "unhealthy")
        placed = (await admin.post("/v1/connect", json={"template": "demo", "location": DUBLIN})).json()
        assert placed["region"] == "us-east", "the nearest region's only node is unhealthy"

        (data_dir / "replica").unlink()  # the operator clears the way
        edge.app[keys.SYNC_LOOP].nudge()
        await asyncio.wait_for(edge.app[keys.SYNC_LOOP].wait_applied(await version(admin)), 30)
        assert await _healthz(edge.port) == (200, {"status": "ok"})
        await send_heartbeat(edge.app)
        control.state.connect.fleet.invalidate()  # the fleet view is cached for a moment
        preview = (await admin.post("/v1/placement/preview", json={"location": DUBLIN})).json()
        assert preview["region"] == "eu-west"
    finally:
        await edge.stop()
