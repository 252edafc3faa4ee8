"""Connect throughput and latency against the control plane (embedded PostgreSQL, this machine).

Existing-key connects (read path) and new-key connects (one write transaction each), driven by
a closed-loop aiohttp client in this process against `meridian control serve` in another.
Prints JSON. Targets: existing key >= 1,000/s, new key >= 300/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp

from bench.common import ADMIN_TOKEN, closed_loop, control_plane, free_port, summary_ms

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


HEARTBEAT = {
    "node_id": "nd-bench",
    "region": "eu-west",
    "address": "http://nd.test:1",
    "capacity": 1_000_000,
    "applied_version": 0,
    "backends": [],
}


async def _heartbeats(url: str, edge_token: str) -> None:
    """Keep the bench node healthy, as a real edge would."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {edge_token}"}) as s:
        while True:
            async with s.post(f"{url}/v1/nodes/heartbeat", json=HEARTBEAT) as r:
                assert r.status == 200, await r.text()
            await asyncio.sleep(2)


async def _setup(url: str) -> str:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        r = await s.post(f"{url}/v1/tokens", json={"name": "bench-edge", "scopes": ["edge"]})
        edge = (await r.json())["token"]
        await s.put(f"{url}/v1/regions/eu-west", json={"lat": 53.35, "lon": -6.26, "edge_url": "http://eu.test"})
        await s.put(f"{url}/v1/templates/demo", json={"executor": "process", "argv": ["true"]})
    return str(edge)


async def _phase(url: str, keys: list[str], concurrency: int) -> dict[str, object]:
    failures: Counter[str] = Counter()

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with session.post(f"{url}/v1/connect", json={"key": keys[i], "template": "demo"}, headers=AUTH) as r:
            body = await r.read()
            if r.status != 200:
                failures[f"{r.status} {json.loads(body).get('error', {}).get('code', '?')}"] += 1

    elapsed, lat = await closed_loop(one, total=len(keys), concurrency=concurrency)
    return {
        "requests": len(keys),
        "per_s": round(len(keys) / elapsed, 1),
        **summary_ms(lat),
        "errors": sum(failures.values()),
        "errors_by_code": dict(failures),
    }


async def run(url: str, n: int, concurrency: int) -> dict[str, object]:
    heartbeats = asyncio.create_task(_heartbeats(url, await _setup(url)))
    warm = [f"warm-{i}" for i in range(200)]
    await _phase(url, warm, concurrency)
    new = await _phase(url, [f"new-{i}" for i in range(n)], concurrency)
    existing_keys = [f"new-{i % n}" for i in range(n * 2)]
    existing = await _phase(url, existing_keys, concurrency)
    heartbeats.cancel()
    return {"new_key": new, "existing_key": existing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp, control_plane(Path(tmp), free_port()) as url:
        result = asyncio.run(run(url, args.requests, args.concurrency))
    result |= {
        "bench": "connect_control",
        "concurrency": args.concurrency,
        "targets": {"existing_key_per_s": 1000, "new_key_per_s": 300},
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
