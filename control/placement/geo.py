"""Great-circle geometry for placement: a point on the sphere and the one distance function."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the radius every distance in placement is measured with."""


def valid_lat_lon(lat: object, lon: object) -> bool:
    """True for finite real numbers within [-90, 90] x [-180, 180] (NaN, infinities and bools refused)."""
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return False
    if isinstance(lat, bool) or isinstance(lon, bool):
        return False
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A place on the Earth in degrees (where a user is, or a region), with its unit vector: the
    distance between two points is then a chord length and one arcsine."""

    lat: float
    lon: float
    xyz: tuple[float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phi, lam = math.radians(self.lat), math.radians(self.lon)
        object.__setattr__(self, "xyz", (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)))

    def distance_km(self, other: GeoPoint) -> float:
        """Great-circle distance: the angle subtended by the chord between the unit vectors."""
        return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.dist(self.xyz, other.xyz) / 2))

    def as_tuple(self) -> tuple[float, float]:
        return (self.lat, self.lon)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    return GeoPoint(lat1, lon1).distance_km(GeoPoint(lat2, lon2))
