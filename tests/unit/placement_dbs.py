"""Small MaxMind DB files for placement tests, built with mmdb-writer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def city_record(lat: float, lon: float, city: str = "Somewhere") -> dict[str, Any]:
    """A record shaped like GeoIP2/GeoLite2 City data (the parts that matter here)."""
    return {
        "city": {"names": {"en": city}},
        "country": {"iso_code": "ZZ", "names": {"en": "Testland"}},
        "location": {"latitude": float(lat), "longitude": float(lon), "accuracy_radius": 50},
    }


def write_db(
    path: Path,
    networks: Mapping[str, Mapping[str, Any]],
    *,
    database_type: str = "GeoIP2-City",
    ip_version: int = 6,
) -> Path:
    """Write an .mmdb mapping each CIDR in `networks` to its record; return `path`."""
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description="Meridian placement test database",
    )
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), dict(record))
    writer.to_db_file(str(path))
    return path


def write_country_db(path: Path) -> Path:
    """A GeoIP2-Country database: valid MaxMind DB, but without coordinates."""
    return write_db(
        path,
        {"81.2.69.0/24": {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}}},
        database_type="GeoIP2-Country",
    )


def write_garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a MaxMind DB file\n" * 100)
    return path
