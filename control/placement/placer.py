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

Plain code: every candidate is measured on each call (its unit vector was computed when the
candidate was built); the full ranking only when someone reads it (bench/placement.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sync.errors import BadRequest, NoCapacity, RegionUnknown

from .geo import EARTH_RADIUS_KM, GeoPoint, valid_lat_lon
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
    RegionCandidate,
)

__all__ = ["TIE_KM", "Placer"]

TIE_KM = 1.0
"""Distances closer than this count as equal; load, then name, decides between them."""


class _Checked:
    """The candidates of one call, checked once: refusing the caller's bugs (duplicate names,
    invalid coordinates), with what every origin's measuring needs."""

    __slots__ = ("by_name", "eligible", "ineligible", "points", "xyz")

    def __init__(self, candidates: tuple[RegionCandidate, ...]) -> None:
        self.by_name = {c.name: c for c in candidates}
        if len(self.by_name) != len(candidates):
            dupes = sorted({c.name for c in candidates if sum(d.name == c.name for d in candidates) > 1})
            raise ValueError(f"duplicate region names among candidates: {dupes}")
        self.points: list[GeoPoint] = []
        self.eligible: list[int] = []
        self.ineligible: list[int] = []
        for i, c in enumerate(candidates):
            if c.where is None:
                raise ValueError(f"region {c.name!r} has invalid coordinates ({c.lat!r}, {c.lon!r})")
            self.points.append(c.where)
            (self.eligible if c.why_not is None else self.ineligible).append(i)
        self.xyz = [p.xyz for p in self.points]


def _check_location(location: tuple[float, float]) -> GeoPoint:
    try:
        lat, lon = location
    except (TypeError, ValueError):
        raise BadRequest("location must be a (lat, lon) pair", fields={"location": "expected (lat, lon)"}) from None
    if not valid_lat_lon(lat, lon):
        raise BadRequest(
            f"location ({lat!r}, {lon!r}) is out of range",
            fields={"location": "lat must be within [-90, 90] and lon within [-180, 180]"},
        )
    return GeoPoint(float(lat), float(lon))


def _no_capacity(candidates: Sequence[RegionCandidate]) -> NoCapacity:
    if not candidates:
        return NoCapacity("no region is registered, so none can take a new backend")
    counts: dict[str, int] = {}
    for c in candidates:
        if c.why_not is not None:
            counts[c.why_not] = counts.get(c.why_not, 0) + 1
    summary = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
    return NoCapacity(
        f"no region can take a new backend ({summary})",
        fields={"regions": {c.name: c.why_not for c in candidates}},
    )


class Placer:
    """Chooses regions for new backends. Pure CPU apart from the GeoIP lookup; holds nothing but
    its locator and tie distance."""

    __slots__ = ("_tie_km", "locator")

    def __init__(self, locator: GeoLocator | None, *, tie_km: float = TIE_KM) -> None:
        if not tie_km >= 0.0:
            raise ValueError(f"tie_km must be >= 0, not {tie_km!r}")
        self.locator = locator  # None: client_ip signals fall through; swap it to reload the database
        self._tie_km = tie_km

    def place(self, inp: PlacementInput, candidates: Sequence[RegionCandidate]) -> PlacementDecision:
        """Choose the region for a new backend.

        Raises BadRequest (malformed `client_ip`, `location` out of range), RegionUnknown (pinned
        region not among the candidates) or NoCapacity (no eligible region). Inputs are validated
        even when a stronger signal makes them unused. Candidates must have distinct names and valid
        coordinates (ValueError otherwise: that is the caller's bug, not the user's).
        """
        location = None if inp.location is None else _check_location(inp.location)
        client_ip = None if inp.client_ip is None else normalize_client_ip(inp.client_ip)
        cands = tuple(candidates)
        checked = _Checked(cands)
        by_name = checked.by_name

        if inp.pinned_region is not None:
            pinned = by_name.get(inp.pinned_region)
            if pinned is None:
                raise RegionUnknown(
                    f"region {inp.pinned_region!r} is unknown",
                    fields={"region": f"{inp.pinned_region!r} is not a registered region"},
                )
            assert pinned.where is not None
            if pinned.eligible:
                return PlacementDecision(pinned.name, PINNED, 0.0, pinned.where.as_tuple(), cands)
            return self._nearest(cands, checked, pinned.where, PINNED, fallback=True)
        if location is not None:
            return self._nearest(cands, checked, location, LOCATION)
        if client_ip is not None and self.locator is not None:
            located = self.locator.locate_normalized(*client_ip)
            if located is not None:
                return self._nearest(cands, checked, GeoPoint(*located), CLIENT_IP)
        for region, signal in ((inp.arrival_region, ARRIVAL_EDGE), (inp.default_region, DEFAULT)):
            where = by_name[region].where if region in by_name else None
            if where is not None:
                return self._nearest(cands, checked, where, signal)
        eligible = [c for c in cands if c.why_not is None]
        if not eligible:
            raise _no_capacity(cands)
        chosen = min(eligible, key=lambda c: (c.load, c.name))
        return PlacementDecision(chosen.name, DEFAULT, None, None, cands)

    def _nearest(
        self,
        cands: tuple[RegionCandidate, ...],
        checked: _Checked,
        origin: GeoPoint,
        signal: str,
        *,
        fallback: bool = False,
    ) -> PlacementDecision:
        """The eligible region nearest to `origin`; `fallback` forces the "+fallback" suffix.

        Candidates are compared by the squared chord between unit vectors (the great-circle
        distance grows with it); only the few near a decision are measured in km, with the function
        the ranking uses, so ties within `tie_km` are judged in km as documented."""
        if not checked.eligible:
            raise _no_capacity(cands)
        ox, oy, oz = origin.xyz
        chords = [(x - ox) * (x - ox) + (y - oy) * (y - oy) + (z - oz) * (z - oz) for x, y, z in checked.xyz]
        points, tie = checked.points, self._tie_km
        nearest = origin.distance_km(points[min(checked.eligible, key=chords.__getitem__)])
        reach = _squared_chord(nearest + tie) * (1 + _SLACK) + _SLACK
        tied = [
            (cands[i], km)
            for i in checked.eligible
            if chords[i] <= reach and (km := origin.distance_km(points[i])) <= nearest + tie
        ]
        chosen, chosen_km = min(tied, key=lambda t: (t[0].load, t[0].name))
        if not fallback and checked.ineligible:
            nearer = origin.distance_km(points[min(checked.ineligible, key=chords.__getitem__)])
            fallback = nearer < nearest - tie
        reason = signal + FALLBACK_SUFFIX if fallback else signal
        return PlacementDecision(chosen.name, reason, round(chosen_km, 1), origin.as_tuple(), cands)


_SLACK = 1e-9
"""Squared chords and km round differently: whatever is this close to the tie distance is measured."""


def _km(squared_chord: float) -> float:
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(squared_chord) / 2))


def _squared_chord(km: float) -> float:
    return (2 * math.sin(min(math.pi / 2, km / (2 * EARTH_RADIUS_KM)))) ** 2
