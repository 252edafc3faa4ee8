"""Losing PostgreSQL: clients get 503 with Retry-After, and the control plane recovers by itself."""

from __future__ import annotations

from pathlib import Path

from control.embedded_db import DATABASE_NAME, EmbeddedPostgres, ensure_database
from tests.conftest import start_control, stop_control


async def test_database_down_gives_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    import asyncio

    server = EmbeddedPostgres(tmp_path)  # a server of its own: this test stops it
    admin_url = await asyncio.to_thread(server.start)
    running = None
    try:
        url = await ensure_database(admin_url, DATABASE_NAME)
        running = await start_control(url)
        async with running.client() as admin:
            assert (await admin.get("/healthz")).status_code == 200
            await asyncio.to_thread(server.stop)
            for path in ("/healthz", "/v1/regions"):
                r = await admin.get(path)
                assert r.status_code == 503, (path, r.text)
                assert r.json()["error"]["code"] == "database_unavailable"
                assert int(r.headers["retry-after"]) >= 1
            r = await admin.put("/v1/regions/eu-west", json={"lat": 1, "lon": 2, "edge_url": "http://e"})
            assert r.status_code in (401, 503)  # a cached token may still pass auth; the write cannot
            await asyncio.to_thread(server.start)
            for _ in range(50):
                r = await admin.get("/healthz")
                if r.status_code == 200:
                    break
            assert r.status_code == 200, "the control plane did not recover after PostgreSQL came back"
            r = await admin.put("/v1/regions/eu-west", json={"lat": 1, "lon": 2, "edge_url": "http://e"})
            assert r.status_code == 200
    finally:
        if running is not None:
            await stop_control(running)
        await asyncio.to_thread(server.stop)
