"""Great-circle geometry for placement: haversine distances and unit vectors on the sphere.

Placement ranks regions by the dot product of unit vectors (cheap and monotone in distance) and
computes exact haversine distances only for the few regions whose distance it reports or compares.
"""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the radius every distance in placement is measured with."""

_asin = math.asin
_cos = math.cos
_radians = math.radians
_sin = math.sin
_sqrt = math.sqrt
_DIAMETER_KM = 2.0 * EARTH_RADIUS_KM


def valid_lat_lon(lat: object, lon: object) -> bool:
    """True for finite real numbers within [-90, 90] x [-180, 180] (NaN, infinities and bools refused)."""
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return False
    if isinstance(lat, bool) or isinstance(lon, bool):
        return False
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


def haversine_rad(lat1: float, lon1: float, cos1: float, lat2: float, lon2: float, cos2: float) -> float:
    """Great-circle distance in km between two points given in radians, with cos(lat) of each."""
    # Written exactly as placement's inlined ranking loop, so both give bit-identical distances.
    return _DIAMETER_KM * _asin(
        _sqrt(min(1.0, _sin((lat2 - lat1) * 0.5) ** 2 + cos1 * cos2 * _sin((lon2 - lon1) * 0.5) ** 2))
    )


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    r1 = _radians(lat1)
    r2 = _radians(lat2)
    return haversine_rad(r1, _radians(lon1), _cos(r1), r2, _radians(lon2), _cos(r2))


def unit_vector(lat_rad: float, lon_rad: float) -> tuple[float, float, float]:
    """The point as a unit vector; the dot product of two of them is the cosine of their angle."""
    c = _cos(lat_rad)
    return (c * _cos(lon_rad), c * _sin(lon_rad), _sin(lat_rad))
