"""Great-circle geometry for placement: a point on the sphere and the one distance function."""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the radius every distance in placement is measured with."""


def valid_lat_lon(lat: object, lon: object) -> bool:
    """True for finite real numbers within [-90, 90] x [-180, 180] (NaN, infinities and bools refused)."""
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return False
    if isinstance(lat, bool) or isinstance(lon, bool):
        return False
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dlat = (phi2 - phi1) / 2
    half_dlon = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dlat) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlon) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A place on the Earth in degrees: where a user is, or where a region is."""

    lat: float
    lon: float

    def distance_km(self, other: GeoPoint) -> float:
        return haversine_km(self.lat, self.lon, other.lat, other.lon)

    def as_tuple(self) -> tuple[float, float]:
        return (self.lat, self.lon)
