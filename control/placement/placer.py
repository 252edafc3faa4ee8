"""Choosing the region of a new backend: the nearest eligible region to the strongest signal.

Signals, strongest first (DESIGN.md, "Placement"):

1. `pinned_region`  -> that region if it is eligible, else the eligible region nearest to it
   (`pinned+fallback`); a region that is not among the candidates raises `RegionUnknown`;
2. `location`       -> (lat, lon) given by the caller (`location`);
3. `client_ip`      -> located with the GeoIP City database (`client_ip`);
4. `arrival_region` -> coordinates of the region whose edge received the request (`arrival_edge`);
5. `default_region` -> coordinates of the configured default region (`default`);
6. nothing usable   -> the least-loaded eligible region, ties by name (`default`, no distance).

A signal that yields no origin (non-public or unknown IP, no GeoIP database, a region that is not
among the candidates) falls through to the next one. From an origin, the nearest eligible region by
great-circle distance wins; regions within `tie_km` (1 km) of the nearest count as equally near
and the least loaded of them (then the first by name) wins. When a region nearer than that (by more
than `tie_km`) could not take the backend, the reason gets "+fallback".

Eligible = healthy, not draining, free_capacity > 0. No eligible region at all -> `NoCapacity`.

Speed: the candidate set is turned into a table (unit vectors, radians, eligibility) once per
candidate *tuple* (cached by identity, so pass the same tuple while the fleet state is unchanged)
and from a per-name geometry cache otherwise. Choosing ranks by dot products of unit vectors and
computes exact haversine distances only for the winner, near-ties and the nearest ineligible region;
the full ranking is computed only if someone reads `decision.ranking`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

from sync.errors import BadRequest, NoCapacity, RegionUnknown

from .geo import EARTH_RADIUS_KM, haversine_rad, unit_vector, valid_lat_lon
from .geoip import GeoLocator, normalize_client_ip
from .model import (
    ARRIVAL_EDGE,
    CLIENT_IP,
    DEFAULT,
    FALLBACK_SUFFIX,
    LOCATION,
    PINNED,
    PlacementDecision,
    PlacementInput,
    Ranking,
    RankRow,
    RegionCandidate,
    WhyNot,
)

__all__ = ["TIE_KM", "Placer"]

TIE_KM = 1.0
"""Distances closer than this count as equal; load, then name, decides between them."""

_GEOMETRY_CACHE_MAX = 4096
_DOT_SLACK = 1e-9  # float error margin when preselecting near-ties by dot product

_asin = math.asin
_cos = math.cos
_sqrt = math.sqrt
_DIAMETER_KM = 2.0 * EARTH_RADIUS_KM
_sin = math.sin
_radians = math.radians
_pi = math.pi

# (lat, lon, lat_rad, lon_rad, cos_lat, unit vector)
_Geometry = tuple[float, float, float, float, float, tuple[float, float, float]]


def _geometry(c: RegionCandidate) -> _Geometry:
    if not valid_lat_lon(c.lat, c.lon):
        raise ValueError(f"region {c.name!r} has invalid coordinates ({c.lat!r}, {c.lon!r})")
    lat = float(c.lat)
    lon = float(c.lon)
    lat_r = _radians(lat)
    lon_r = _radians(lon)
    return (lat, lon, lat_r, lon_r, _cos(lat_r), unit_vector(lat_r, lon_r))


class _Table:
    """A candidate set prepared for placement; never mutated once built (rankings keep a reference)."""

    __slots__ = (
        "_least_loaded",
        "elig",
        "elig_xyz",
        "geo",
        "index",
        "inelig",
        "inelig_xyz",
        "loads",
        "names",
        "why_not",
    )

    def __init__(self, candidates: Sequence[RegionCandidate], cache: dict[str, _Geometry]) -> None:
        names: list[str] = []
        geo: list[_Geometry] = []
        loads: list[float] = []
        why_not: list[WhyNot | None] = []
        elig: list[int] = []
        elig_xyz: list[tuple[float, float, float]] = []
        inelig: list[int] = []
        inelig_xyz: list[tuple[float, float, float]] = []
        cache_get = cache.get
        for i, c in enumerate(candidates):
            name = c.name
            g = cache_get(name)
            if g is None or g[0] != c.lat or g[1] != c.lon:
                g = _geometry(c)
                if len(cache) >= _GEOMETRY_CACHE_MAX:
                    cache.clear()
                cache[name] = g
            names.append(name)
            geo.append(g)
            loads.append(c.load)
            if not c.healthy:
                why: WhyNot | None = "unhealthy"
            elif c.draining:
                why = "draining"
            elif c.free_capacity <= 0:
                why = "full"
            else:
                elig.append(i)
                elig_xyz.append(g[5])
                why_not.append(None)
                continue
            why_not.append(why)
            inelig.append(i)
            inelig_xyz.append(g[5])
        index = dict(zip(names, range(len(names)), strict=True))
        if len(index) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate region names among candidates: {dupes}")
        self.names = names
        self.index = index
        self.geo = geo
        self.loads = loads
        self.why_not = why_not
        self.elig = elig
        self.elig_xyz = elig_xyz
        self.inelig = inelig
        self.inelig_xyz = inelig_xyz
        self._least_loaded: int | None = None

    def least_loaded(self) -> int:
        i = self._least_loaded
        if i is None:
            loads = self.loads
            names = self.names
            i = self._least_loaded = min(self.elig, key=lambda j: (loads[j], names[j]))
        return i

    def no_capacity(self) -> NoCapacity:
        if not self.names:
            return NoCapacity("no region is registered, so none can take a new backend")
        counts: dict[str, int] = {}
        for why in self.why_not:
            if why is not None:
                counts[why] = counts.get(why, 0) + 1
        summary = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        return NoCapacity(
            f"no region can take a new backend ({summary})",
            fields={"regions": {n: w for n, w in zip(self.names, self.why_not, strict=True)}},
        )

    def rank(self, origin: tuple[float, float] | None) -> list[RankRow]:
        """All candidates as sorted rows: by distance from `origin` (or by load), then load, then name."""
        names = self.names
        loads = self.loads
        why_not = self.why_not
        order = range(len(names))
        if origin is None:
            ranked_by_load = sorted(zip(loads, names, order, strict=True))
            return [(name, None, why_not[i], load) for load, name, i in ranked_by_load]
        la = _radians(origin[0])
        lo = _radians(origin[1])
        cl = _cos(la)
        # haversine_rad inlined (same expression, so the same result to the bit): runs per candidate.
        dist = [
            _DIAMETER_KM
            * _asin(_sqrt(min(1.0, _sin((g[2] - la) * 0.5) ** 2 + cl * g[4] * _sin((g[3] - lo) * 0.5) ** 2)))
            for g in self.geo
        ]
        ranked = sorted(zip(dist, loads, names, order, strict=True))
        return [(name, round(d, 1), why_not[i], load) for d, load, name, i in ranked]


def _check_location(location: tuple[float, float]) -> tuple[float, float]:
    try:
        lat, lon = location
    except (TypeError, ValueError):
        raise BadRequest(
            "location must be a (lat, lon) pair",
            fields={"location": "expected (lat, lon)"},
        ) from None
    if not valid_lat_lon(lat, lon):
        raise BadRequest(
            f"location ({lat!r}, {lon!r}) is out of range",
            fields={"location": "lat must be within [-90, 90] and lon within [-180, 180]"},
        )
    return (float(lat), float(lon))


class Placer:
    """Chooses regions for new backends. Pure CPU apart from the GeoIP lookup; reusable and cheap
    to call; holds two caches (the last candidate tuple's table, region geometry by name)."""

    __slots__ = ("_geometry", "_last", "_tie_km", "locator")

    def __init__(self, locator: GeoLocator | None, *, tie_km: float = TIE_KM) -> None:
        if not tie_km >= 0.0:
            raise ValueError(f"tie_km must be >= 0, not {tie_km!r}")
        self.locator = locator  # None: client_ip signals fall through; swap it to reload the database
        self._tie_km = tie_km
        self._geometry: dict[str, _Geometry] = {}
        self._last: tuple[Sequence[RegionCandidate], _Table] | None = None

    def _table(self, candidates: Sequence[RegionCandidate]) -> _Table:
        last = self._last
        if last is not None and last[0] is candidates:
            return last[1]
        table = _Table(candidates, self._geometry)
        if type(candidates) is tuple:  # immutable: safe to recognise by identity next time
            self._last = (candidates, table)
        return table

    def place(self, inp: PlacementInput, candidates: Sequence[RegionCandidate]) -> PlacementDecision:
        """Choose the region for a new backend.

        Raises BadRequest (malformed `client_ip`, `location` out of range), RegionUnknown (pinned
        region not among the candidates) or NoCapacity (no eligible region). Inputs are validated
        even when a stronger signal makes them unused. Candidates must have distinct names and valid
        coordinates (ValueError otherwise: that is the caller's bug, not the user's).
        """
        location = inp.location
        origin: tuple[float, float] | None = None
        if location is not None:
            origin = _check_location(location)
        client_ip = inp.client_ip
        normalized = None if client_ip is None else normalize_client_ip(client_ip)
        table = self._table(candidates)

        pinned = inp.pinned_region
        if pinned is not None:
            i = table.index.get(pinned)
            if i is None:
                raise RegionUnknown(
                    f"region {pinned!r} is unknown",
                    fields={"region": f"{pinned!r} is not a registered region"},
                )
            g = table.geo[i]
            if table.why_not[i] is None:
                here = (g[0], g[1])
                return PlacementDecision(pinned, PINNED, 0.0, Ranking(partial(table.rank, here)), here)
            return self._nearest(table, g[0], g[1], PINNED, True)

        if origin is not None:
            return self._nearest(table, origin[0], origin[1], LOCATION, False)

        if normalized is not None and self.locator is not None:
            located = self.locator.locate_normalized(normalized[0], normalized[1])
            if located is not None:
                return self._nearest(table, located[0], located[1], CLIENT_IP, False)

        for region, signal in ((inp.arrival_region, ARRIVAL_EDGE), (inp.default_region, DEFAULT)):
            if region is not None:
                i = table.index.get(region)
                if i is not None:
                    g = table.geo[i]
                    return self._nearest(table, g[0], g[1], signal, False)

        if not table.elig:
            raise table.no_capacity()
        i = table.least_loaded()
        return PlacementDecision(table.names[i], DEFAULT, None, Ranking(partial(table.rank, None)), None)

    def _nearest(self, table: _Table, lat: float, lon: float, signal: str, fallback: bool) -> PlacementDecision:
        """The eligible region nearest to (lat, lon); `fallback` forces the "+fallback" suffix."""
        elig = table.elig
        if not elig:
            raise table.no_capacity()
        geo = table.geo
        tie_km = self._tie_km
        la = _radians(lat)
        lo = _radians(lon)
        cl = _cos(la)
        ox = cl * _cos(lo)
        oy = cl * _sin(lo)
        oz = _sin(la)

        # Nearest eligible region by dot product (= cosine of the angle: larger is nearer).
        dots = [ox * x + oy * y + oz * z for x, y, z in table.elig_xyz]
        best_dot = max(dots)
        b = dots.index(best_dot)
        chosen = elig[b]
        g = geo[chosen]
        d_near = d_chosen = haversine_rad(la, lo, cl, g[2], g[3], g[4])

        # Near-ties: every other eligible region within tie_km of the nearest one.
        if len(dots) > 1:
            window = d_near / EARTH_RADIUS_KM + tie_km / EARTH_RADIUS_KM
            threshold = _cos(window) - _DOT_SLACK if window < _pi else -2.0
            dots[b] = -3.0
            if max(dots) >= threshold:
                group = [elig[j] for j, d in enumerate(dots) if d >= threshold]
                group.append(chosen)
                dist = {j: haversine_rad(la, lo, cl, geo[j][2], geo[j][3], geo[j][4]) for j in group}
                d_near = min(dist.values())
                loads = table.loads
                names = table.names
                chosen = min(
                    (j for j in group if dist[j] <= d_near + tie_km),
                    key=lambda j: (loads[j], names[j]),
                )
                d_chosen = dist[chosen]

        # Fallback: an ineligible region clearly nearer than the nearest eligible one.
        if not fallback and table.inelig_xyz:
            idots = [ox * x + oy * y + oz * z for x, y, z in table.inelig_xyz]
            top = max(idots)
            if top > best_dot - _DOT_SLACK:
                gi = geo[table.inelig[idots.index(top)]]
                fallback = haversine_rad(la, lo, cl, gi[2], gi[3], gi[4]) < d_near - tie_km

        origin = (lat, lon)
        return PlacementDecision(
            table.names[chosen],
            signal + FALLBACK_SUFFIX if fallback else signal,
            round(d_chosen, 1),
            Ranking(partial(table.rank, origin)),
            origin,
        )
