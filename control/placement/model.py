"""Inputs and outputs of placement: plain frozen values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal

from .geo import GeoPoint, valid_lat_lon

WhyNot = Literal["unhealthy", "draining", "full"]

# Reasons (API.md `placement.reason`); a fallback appends FALLBACK_SUFFIX.
PINNED: Final = "pinned"
LOCATION: Final = "location"
CLIENT_IP: Final = "client_ip"
ARRIVAL_EDGE: Final = "arrival_edge"
DEFAULT: Final = "default"
FALLBACK_SUFFIX: Final = "+fallback"
EXISTING: Final = "existing"  # for the connect service when the key already has a backend; never placed


@dataclass(frozen=True, slots=True)
class RegionCandidate:
    """One region as placement sees it. Pass every known region, unhealthy and full ones included:
    a pinned region missing from the candidates is "unknown", not "unavailable"."""

    name: str
    lat: float
    lon: float
    healthy: bool  # the region has at least one healthy edge node
    free_capacity: int  # free backend slots on its healthy nodes (<= 0 means full)
    load: float  # live backends / total capacity, for tie-breaking (lower wins)
    draining: bool = False
    where: GeoPoint | None = field(init=False, repr=False, compare=False)
    """Its place on the sphere; None for invalid coordinates (placement refuses such a candidate)."""
    why_not: WhyNot | None = field(init=False, repr=False, compare=False)
    """None if the region can take a new backend, else why not (unhealthy > draining > full)."""

    def __post_init__(self) -> None:
        valid = valid_lat_lon(self.lat, self.lon)
        object.__setattr__(self, "where", GeoPoint(float(self.lat), float(self.lon)) if valid else None)
        why: WhyNot | None = None
        if not self.healthy:
            why = "unhealthy"
        elif self.draining:
            why = "draining"
        elif self.free_capacity <= 0:
            why = "full"
        object.__setattr__(self, "why_not", why)

    @property
    def eligible(self) -> bool:
        return self.why_not is None


@dataclass(frozen=True, slots=True)
class PlacementInput:
    """The signals of one connect request, strongest first."""

    pinned_region: str | None = None
    location: tuple[float, float] | None = None  # (lat, lon) given by the caller
    client_ip: str | None = None  # already trust-filtered by the caller
    arrival_region: str | None = None  # region of the edge the request arrived at
    default_region: str | None = None


@dataclass(frozen=True, slots=True)
class RankedRegion:
    """One candidate in a decision's ranking."""

    name: str
    distance_km: float | None  # from the decision's origin, 0.1 km; None without an origin
    eligible: bool
    why_not: WhyNot | None  # "full" | "unhealthy" | "draining" when not eligible
    load: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distance_km": self.distance_km,
            "eligible": self.eligible,
            "why_not": self.why_not,
            "load": self.load,
        }


Ranking = tuple[RankedRegion, ...]
"""Every candidate, nearest to the decision's origin first (without an origin: least loaded
first); equal distances by load, then name."""


@dataclass(frozen=True)
class PlacementDecision:
    """Where a new backend goes and why."""

    region: str
    reason: str  # pinned | location | client_ip | arrival_edge | default, maybe + "+fallback"
    distance_km: float | None  # origin to the chosen region, 0.1 km; None without an origin
    origin: tuple[float, float] | None  # (lat, lon) distances are measured from
    candidates: tuple[RegionCandidate, ...] = field(repr=False)

    @property
    def fallback(self) -> bool:
        """True when a nearer region (or the pinned one) could not take the backend."""
        return self.reason.endswith(FALLBACK_SUFFIX)

    @property
    def signal(self) -> str:
        """The reason without "+fallback": which input decided the origin."""
        return self.reason.removesuffix(FALLBACK_SUFFIX)

    @cached_property
    def ranking(self) -> Ranking:
        """Every candidate, nearest to the origin first (without one: least loaded first), equal
        distances by load, then name. Computed when first read: connect reads it only to explain."""
        if self.origin is None:
            by_load = sorted(self.candidates, key=lambda c: (c.load, c.name))
            return tuple(RankedRegion(c.name, None, c.eligible, c.why_not, c.load) for c in by_load)
        origin = GeoPoint(*self.origin)
        measured = sorted(
            ((origin.distance_km(c.where), c) for c in self.candidates if c.where is not None),
            key=lambda m: (m[0], m[1].load, m[1].name),
        )
        return tuple(RankedRegion(c.name, round(d, 1), c.eligible, c.why_not, c.load) for d, c in measured)

    def to_wire(self, ranking_limit: int | None = None) -> dict[str, Any]:
        """The API's `placement` field: `{region, reason, distance_km, ranking: [...]}`.

        `ranking_limit` keeps only the first N ranked regions (None: all of them).
        """
        limit = None if ranking_limit is None else max(0, ranking_limit)
        shown = () if limit == 0 else self.ranking[:limit]  # limit 0 (connect): never computed
        return {
            "region": self.region,
            "reason": self.reason,
            "distance_km": self.distance_km,
            "ranking": [r.to_wire() for r in shown],
        }
