"""Geo placement through the real connect endpoint: GeoIP test database, 10-region catalog."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.settings import ControlSettings
from sync.catalog import KNOWN_REGIONS
from tests.conftest import ADMIN_TOKEN, CITY_TEST_DB, RunningControl, start_control, stop_control
from tests.helpers import add_region, heartbeat

LONDON, MILTON, CHANGCHUN, TOKYO = "81.2.69.142", "216.160.83.56", "175.16.199.0", "2001:218::1"


@pytest.fixture
async def geo_control(db_url: str) -> AsyncIterator[RunningControl]:
    running = await start_control(db_url, ControlSettings(port=0, admin_token=ADMIN_TOKEN, geoip_db=CITY_TEST_DB))
    try:
        yield running
    finally:
        await stop_control(running)


@pytest.fixture
async def world(geo_control: RunningControl, edge_token_geo: str) -> RunningControl:
    async with geo_control.client() as admin:
        for name in KNOWN_REGIONS:
            await add_region(admin, name)
            assert (await heartbeat(geo_control.url, edge_token_geo, f"nd-{name}", name, capacity=5)).status_code == 200
        r = await admin.put("/v1/templates/demo", json={"executor": "process", "argv": ["true"]})
        assert r.status_code == 200
    return geo_control


@pytest.fixture
async def edge_token_geo(geo_control: RunningControl) -> str:
    async with geo_control.client() as admin:
        return str((await admin.post("/v1/tokens", json={"name": "edge", "scopes": ["edge"]})).json()["token"])


async def _connect(client: httpx.AsyncClient, **body: object) -> dict[str, Any]:
    r = await client.post("/v1/connect", json={"template": "demo", **body})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


@pytest.mark.parametrize(
    ("ip", "region", "km_range"),
    [
        (LONDON, "eu-west", (440, 490)),
        (MILTON, "us-west", (180, 230)),
        (CHANGCHUN, "ap-northeast", (1450, 1600)),
        (TOKYO, "ap-northeast", (0, 50)),
    ],
)
async def test_users_land_in_their_nearest_region(
    world: RunningControl, ip: str, region: str, km_range: tuple[float, float]
) -> None:
    async with world.client() as admin:
        answer = await _connect(admin, client_ip=ip)
    assert answer["region"] == region
    assert answer["placement"]["reason"] == "client_ip"
    assert km_range[0] <= answer["placement"]["distance_km"] <= km_range[1]


async def test_nearest_unhealthy_or_full_falls_back_to_the_next_nearest(world: RunningControl) -> None:
    async with world.client() as admin:
        async with world.state.pool.acquire() as conn:
            await conn.execute(
                "UPDATE edge_nodes SET last_heartbeat_at = now() - interval '1 hour' WHERE region = 'eu-west'"
            )
        world.state.connect.fleet.invalidate()
        answer = await _connect(admin, client_ip=LONDON)
        assert answer["region"] == "eu-central" and answer["placement"]["reason"] == "client_ip+fallback"
        for _ in range(5):  # fill eu-central (capacity 5, one already used)
            await _connect(admin, region="eu-central")
        world.state.connect.fleet.invalidate()
        answer = await _connect(admin, client_ip=LONDON)
        assert answer["region"] not in ("eu-west", "eu-central")
        assert answer["placement"]["reason"] == "client_ip+fallback"


async def test_client_scope_cannot_forge_its_location_by_header_or_body(world: RunningControl) -> None:
    async with world.client() as admin:
        client_token = (await admin.post("/v1/tokens", json={"name": "c", "scopes": ["client"]})).json()["token"]
    async with world.client(client_token) as client:
        forged = await _connect(client, client_ip=TOKYO)
        assert forged["placement"]["reason"] != "client_ip", "a client must not choose its own client_ip"
        r = await client.post("/v1/connect", json={"template": "demo"}, headers={"X-Forwarded-For": TOKYO})
        assert r.json()["placement"]["reason"] != "client_ip"
        assert r.json()["region"] != "ap-northeast" or r.json()["placement"]["reason"] == "default"


async def test_edge_forwarded_for_and_arrival_region_are_trusted(world: RunningControl, edge_token_geo: str) -> None:
    async with world.client(edge_token_geo) as edge:
        r = await edge.post(
            "/v1/connect", json={"template": "demo"}, headers={"X-Forwarded-For": f"{MILTON}, 10.0.0.1"}
        )
        assert r.json()["region"] == "us-west" and r.json()["placement"]["reason"] == "client_ip"
        r = await edge.post(
            "/v1/connect",
            json={"template": "demo"},
            headers={"X-Forwarded-For": "10.1.2.3", "X-Meridian-Arrival-Region": "ap-south"},
        )
        assert r.json()["region"] == "ap-south" and r.json()["placement"]["reason"] == "arrival_edge"


async def test_pinned_region_wins_over_location_and_ip(world: RunningControl) -> None:
    async with world.client() as admin:
        answer = await _connect(admin, region="sa-east", client_ip=LONDON, location={"lat": 35.7, "lon": 139.7})
        assert answer["region"] == "sa-east" and answer["placement"]["reason"] == "pinned"
        located = await _connect(admin, client_ip=LONDON, location={"lat": -33.9, "lon": 151.2})
        assert located["region"] == "au-southeast" and located["placement"]["reason"] == "location"
        r = await admin.post("/v1/connect", json={"template": "demo", "region": "mars-north"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "region_unknown"


async def test_existing_key_stays_where_it_is(world: RunningControl) -> None:
    async with world.client() as admin:
        first = await _connect(admin, key="doc", client_ip=LONDON)
        again = await _connect(admin, key="doc", client_ip=TOKYO)
    assert again["backend_id"] == first["backend_id"] and again["region"] == "eu-west"
    assert again["placement"]["reason"] == "existing"


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the CLI without blocking the event loop that serves the control plane."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meridian",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_cli_connect_explain_and_regions(world: RunningControl) -> None:
    env = {**os.environ, "MERIDIAN_URL": world.url, "MERIDIAN_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}
    code, out = await _cli(env, "connect", "--template", "demo", "--client-ip", LONDON, "--explain")
    assert code == 0, out
    assert "eu-west" in out and "client_ip" in out
    rows = [line.split("│") for line in out.splitlines() if line.count("│") > 3]
    ranked = [cells[2].strip() for cells in rows]
    assert ranked[:2] == ["eu-west", "eu-central"], out
    code, out = await _cli(env, "regions")
    assert code == 0, out
    for name in KNOWN_REGIONS:
        assert name in out
    code, out = await _cli(env, "connect", "--template", "demo", "--region", "nowhere")
    assert code == 1 and "region_unknown" in out


def test_control_plane_refuses_to_start_with_a_bad_geoip_file(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-city.mmdb"
    bad.write_bytes(b"garbage" * 100)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meridian",
            "control",
            "serve",
            "--geoip-db",
            str(bad),
            "--data-dir",
            str(tmp_path),
            "--database-url",
            "postgresql://127.0.0.1:1/none",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert str(bad) in out.stderr
