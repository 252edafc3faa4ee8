"""Geo-aware placement: which region a new backend goes to, and why (DESIGN.md, "Placement").

A pure in-process library: no database, no HTTP. The caller turns its view of the fleet into
`RegionCandidate`s and the request into a `PlacementInput`; `Placer.place` returns a
`PlacementDecision` whose `to_wire()` is the API's `placement` field.

    locator = GeoLocator.open("/var/lib/meridian/GeoLite2-City.mmdb")   # optional
    placer = Placer(locator)
    decision = placer.place(PlacementInput(client_ip="81.2.69.142"), candidates)
    decision.region, decision.reason, decision.distance_km   # "eu-west", "client_ip", 460.3
"""

from .geo import EARTH_RADIUS_KM, GeoPoint, distance_km
from .geoip import GeoIPDatabaseError, GeoLocator, is_locatable_ip, normalize_client_ip
from .model import (
    ARRIVAL_EDGE,
    CLIENT_IP,
    DEFAULT,
    EXISTING,
    FALLBACK_SUFFIX,
    LOCATION,
    PINNED,
    PlacementDecision,
    PlacementInput,
    RankedRegion,
    Ranking,
    RegionCandidate,
    WhyNot,
)
from .placer import TIE_KM, Placer

__all__ = [
    "ARRIVAL_EDGE",
    "CLIENT_IP",
    "DEFAULT",
    "EARTH_RADIUS_KM",
    "EXISTING",
    "FALLBACK_SUFFIX",
    "LOCATION",
    "PINNED",
    "TIE_KM",
    "GeoIPDatabaseError",
    "GeoLocator",
    "GeoPoint",
    "PlacementDecision",
    "PlacementInput",
    "Placer",
    "RankedRegion",
    "Ranking",
    "RegionCandidate",
    "WhyNot",
    "distance_km",
    "is_locatable_ip",
    "normalize_client_ip",
]
