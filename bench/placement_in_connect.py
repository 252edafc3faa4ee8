"""What placement adds to a connect, measured end to end against the control plane.

New-key connects, one at a time (latency, not throughput), against `meridian control serve`
with the GeoIP2 City test database and the 10-region catalog, in interleaved blocks of:
  pinned     `region: eu-west` — placement only checks the pinned region;
  client_ip  `client_ip: 81.2.69.142` (London → eu-west) — a GeoIP lookup and a ranking of 10.
Both land in the same region and node, so the difference of their medians is placement's cost
inside connect. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import ADMIN_TOKEN, control_plane, free_port
from sync.catalog import KNOWN_REGIONS

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GEOIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "geoip" / "GeoIP2-City-Test.mmdb"
LONDON = "81.2.69.142"


async def _setup(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/v1/tokens", json={"name": "edge", "scopes": ["edge"]}) as r:
        edge = (await r.json())["token"]
    for name, where in KNOWN_REGIONS.items():
        await session.put(
            f"{url}/v1/regions/{name}", json={"lat": where.lat, "lon": where.lon, "edge_url": f"http://{name}.test"}
        )
    await session.put(f"{url}/v1/templates/demo", json={"executor": "process", "argv": ["true"]})
    return str(edge)


async def _heartbeats(url: str, edge_token: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {edge_token}"}) as s:
        while True:
            for name in KNOWN_REGIONS:
                hb = {
                    "node_id": f"nd-{name}",
                    "region": name,
                    "address": f"http://{name}.test:1",
                    "capacity": 1_000_000,
                    "applied_version": 0,
                    "backends": [],
                }
                async with s.post(f"{url}/v1/nodes/heartbeat", json=hb) as r:
                    assert r.status == 200, await r.text()
            await asyncio.sleep(2)


async def run(url: str, blocks: int, per_block: int) -> dict[str, object]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        beats = asyncio.create_task(_heartbeats(url, await _setup(session, url)))
        await asyncio.sleep(0.5)  # first heartbeats registered (their own requests above are awaited)
        cases = {"pinned": {"region": "eu-west"}, "client_ip": {"client_ip": LONDON}}
        latencies: dict[str, list[float]] = {name: [] for name in cases}
        n = 0
        for block in range(blocks + 1):  # block 0 warms up
            for name, extra in cases.items():
                for _ in range(per_block):
                    n += 1
                    t0 = time.perf_counter()
                    async with session.post(
                        f"{url}/v1/connect", json={"key": f"k{n}", "template": "demo", **extra}
                    ) as r:
                        body = await r.json()
                    assert r.status == 200 and body["region"] == "eu-west", body
                    if block:
                        latencies[name].append(time.perf_counter() - t0)
        beats.cancel()
    p50 = {name: statistics.median(v) * 1000 for name, v in latencies.items()}
    return {
        "bench": "placement_in_connect",
        "requests_each": blocks * per_block,
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "placement_added_p50_ms": round(p50["client_ip"] - p50["pinned"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--per-block", type=int, default=50)
    args = parser.parse_args()
    if not GEOIP.exists():
        raise SystemExit(f"needs {GEOIP}")
    with (
        tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp,
        control_plane(Path(tmp), free_port(), ("--geoip-db", str(GEOIP))) as url,
    ):
        print(json.dumps(asyncio.run(run(url, args.blocks, args.per_block)), indent=2))


if __name__ == "__main__":
    main()
