"""Known region names and their coordinates (API.md); an edge naming one may create it."""

from __future__ import annotations

from typing import NamedTuple


class KnownRegion(NamedTuple):
    lat: float
    lon: float


KNOWN_REGIONS: dict[str, KnownRegion] = {
    "us-east": KnownRegion(38.9, -77.0),
    "us-west": KnownRegion(45.6, -121.2),
    "eu-west": KnownRegion(53.35, -6.26),
    "eu-central": KnownRegion(50.11, 8.68),
    "ap-southeast": KnownRegion(1.35, 103.82),
    "ap-northeast": KnownRegion(35.68, 139.69),
    "ap-south": KnownRegion(19.08, 72.88),
    "sa-east": KnownRegion(-23.55, -46.63),
    "af-south": KnownRegion(-33.92, 18.42),
    "au-southeast": KnownRegion(-33.87, 151.21),
}
