"""The dashboard map's projection: equirectangular (plate carrée) onto a WIDTH x HEIGHT plane.

`static/projection.js` is the same formula for the browser; the land geometry is pre-projected
with this one (tools/build_land.py), so markers and continents agree.
"""

from __future__ import annotations

WIDTH = 1000.0
HEIGHT = 500.0


def project(lat: float, lon: float) -> tuple[float, float]:
    """(x, y) on the map of a point in degrees; north up, x grows eastwards from lon -180."""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"({lat}, {lon}) is not a point on Earth")
    return (lon + 180.0) / 360.0 * WIDTH, (90.0 - lat) / 180.0 * HEIGHT


def invert(x: float, y: float) -> tuple[float, float]:
    """(lat, lon) in degrees of a point on the map, clamped to the map's edges."""
    x = min(max(x, 0.0), WIDTH)
    y = min(max(y, 0.0), HEIGHT)
    return 90.0 - y / HEIGHT * 180.0, x / WIDTH * 360.0 - 180.0
