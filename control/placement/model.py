"""Inputs and outputs of placement: plain frozen values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

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

    @property
    def why_not(self) -> WhyNot | None:
        """None if the region can take a new backend, else why not (unhealthy > draining > full)."""
        if not self.healthy:
            return "unhealthy"
        if self.draining:
            return "draining"
        if self.free_capacity <= 0:
            return "full"
        return None

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


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """Where a new backend goes and why."""

    region: str
    reason: str  # pinned | location | client_ip | arrival_edge | default, maybe + "+fallback"
    distance_km: float | None  # origin to the chosen region, 0.1 km; None without an origin
    ranking: Ranking
    origin: tuple[float, float] | None  # (lat, lon) distances are measured from

    @property
    def fallback(self) -> bool:
        """True when a nearer region (or the pinned one) could not take the backend."""
        return self.reason.endswith(FALLBACK_SUFFIX)

    @property
    def signal(self) -> str:
        """The reason without "+fallback": which input decided the origin."""
        return self.reason.removesuffix(FALLBACK_SUFFIX)

    def to_wire(self, ranking_limit: int | None = None) -> dict[str, Any]:
        """The API's `placement` field: `{region, reason, distance_km, ranking: [...]}`.

        `ranking_limit` keeps only the first N ranked regions (None: all of them).
        """
        return {
            "region": self.region,
            "reason": self.reason,
            "distance_km": self.distance_km,
            "ranking": [r.to_wire() for r in self.ranking[: None if ranking_limit is None else max(0, ranking_limit)]],
        }
