"""Benchmark of geo-aware placement (control/placement), in-process, one core. Prints JSON.

    .venv/bin/python bench/placement.py [--iterations 200000] [--runs 3] [--mmdb PATH]

Measures, per operation, the best of `--runs` runs of `--iterations` operations each:
  geoip_lookup              GeoLocator.locate(ip) alone (validation + special-range check + mmdb lookup)
  placement_{10,100}        Placer.place with a `location` (no GeoIP), same candidate tuple every call
  decision_{10,100}         Placer.place with a `client_ip`: GeoIP lookup + placement (the connect path)
  decision_100_fresh_list   as decision_100, but a new candidate list per call, so the candidate
                            table is rebuilt every time (no identity cache; geometry cache by name)
  decision_100_to_wire      as decision_100 plus to_wire(): the full ranking of all 100 regions
10 regions = the catalog (sync/catalog.py); 100 = the catalog + 90 synthetic regions spread evenly
over the globe (Fibonacci lattice), one in ten of them full. IPs cycle through the test database's
known addresses (London, Milton WA, Changchun, Tokyo, Boxford, Linköping).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from control.placement import (  # noqa: E402
    GeoLocator,
    PlacementInput,
    Placer,
    RegionCandidate,
)
from sync.catalog import KNOWN_REGIONS  # noqa: E402

DEFAULT_MMDB = REPO / "tests" / "data" / "geoip" / "GeoIP2-City-Test.mmdb"
TEST_IPS = ("81.2.69.142", "216.160.83.56", "175.16.199.0", "2001:218::1", "2.125.160.216", "89.160.20.112")


def catalog_candidates() -> list[RegionCandidate]:
    rng = random.Random(10)
    return [
        RegionCandidate(name, r.lat, r.lon, True, 100, round(rng.uniform(0.05, 0.9), 3))
        for name, r in KNOWN_REGIONS.items()
    ]


def synthetic_candidates(n: int) -> list[RegionCandidate]:
    """`n` regions on a Fibonacci lattice (evenly spread over the sphere); every 10th is full."""
    rng = random.Random(90)
    golden = math.pi * (3.0 - math.sqrt(5.0))
    out = []
    for i in range(n):
        z = 1.0 - 2.0 * (i + 0.5) / n
        lat = math.degrees(math.asin(z))
        lon = math.degrees((golden * i) % (2 * math.pi)) - 180.0
        full = i % 10 == 9
        out.append(RegionCandidate(f"syn-{i:02d}", round(lat, 4), round(lon, 4), True, 0 if full else 50, rng.random()))
    return out


def best_of(runs: int, iterations: int, body: Callable[[int], object]) -> float:
    """Best wall time (s) of `runs` runs of body(iterations)."""
    best = math.inf
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            body(iterations)
            best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mmdb", type=Path, default=DEFAULT_MMDB)
    args = parser.parse_args()
    iterations: int = args.iterations
    runs: int = args.runs

    locator = GeoLocator.open(args.mmdb)
    placer = Placer(locator)
    c10 = tuple(catalog_candidates())
    c100 = c10 + tuple(synthetic_candidates(90))
    assert len(c100) == 100

    ips = TEST_IPS
    m = len(ips)
    located = [locator.locate(ip) for ip in ips]
    assert all(loc is not None for loc in located), "the benchmark IPs must all be in the database"
    ip_inputs = [PlacementInput(client_ip=ip) for ip in ips]
    loc_inputs = [PlacementInput(location=loc) for loc in located if loc is not None]

    def geoip(n: int) -> None:
        locate = locator.locate
        for i in range(n):
            locate(ips[i % m])

    def placement(cands: tuple[RegionCandidate, ...]) -> Callable[[int], None]:
        def body(n: int) -> None:
            place = placer.place
            for i in range(n):
                place(loc_inputs[i % m], cands)

        return body

    def decision(cands: tuple[RegionCandidate, ...]) -> Callable[[int], None]:
        def body(n: int) -> None:
            place = placer.place
            for i in range(n):
                place(ip_inputs[i % m], cands)

        return body

    def decision_fresh_list(n: int) -> None:
        place = placer.place
        for i in range(n):
            place(ip_inputs[i % m], list(c100))

    def decision_to_wire(n: int) -> None:
        place = placer.place
        for i in range(n):
            place(ip_inputs[i % m], c100).to_wire()

    cases: dict[str, tuple[Callable[[int], object], int]] = {
        "geoip_lookup": (geoip, iterations),
        "placement_10": (placement(c10), iterations),
        "placement_100": (placement(c100), iterations),
        "decision_10": (decision(c10), iterations),
        "decision_100": (decision(c100), iterations),
        "decision_100_fresh_list": (decision_fresh_list, iterations),
        "decision_100_to_wire": (decision_to_wire, max(iterations // 10, 1)),
    }
    results: dict[str, dict[str, float | int]] = {}
    for name, (body, n) in cases.items():
        body(min(n, 1000))  # warm caches
        seconds = best_of(runs, n, body)
        results[name] = {
            "iterations": n,
            "best_s": round(seconds, 4),
            "per_s": round(n / seconds),
            "us_each": round(seconds / n * 1e6, 3),
        }
    locator.close()
    print(
        json.dumps(
            {
                "benchmark": "placement",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "maxminddb_c_extension": locator.uses_c_extension,
                "database": args.mmdb.name,
                "runs": runs,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
