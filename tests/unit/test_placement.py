"""Geo-aware placement (control/placement): signals, fallbacks, ties, GeoIP, errors, wire shape.

Expected regions and distances are computed here independently of the library (unit-vector chord
distance, not haversine) or written down from outside knowledge.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random
from pathlib import Path

import maxminddb
import pytest

from control.placement import (
    GeoIPDatabaseError,
    GeoLocator,
    PlacementDecision,
    PlacementInput,
    Placer,
    RankedRegion,
    Ranking,
    RegionCandidate,
    distance_km,
    is_locatable_ip,
    normalize_client_ip,
)
from sync.catalog import KNOWN_REGIONS
from sync.errors import BadRequest, ErrorCode, NoCapacity, RegionUnknown
from tests.conftest import CITY_TEST_DB
from tests.unit.placement_dbs import (
    city_record,
    write_country_db,
    write_db,
    write_garbage,
)

LONDON_IP, MILTON_IP, CHANGCHUN_IP, TOKYO_IP = "81.2.69.142", "216.160.83.56", "175.16.199.0", "2001:218::1"
LONDON = (51.5142, -0.0931)  # the test database's coordinates for LONDON_IP (README)
CAPE_TOWN = (-33.92, 18.42)


# ---- helpers ---------------------------------------------------------------------------------


def chord_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance through the chord between unit vectors (independent of haversine)."""

    def unit(lat: float, lon: float) -> tuple[float, float, float]:
        la, lo = math.radians(lat), math.radians(lon)
        return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))

    return 2 * math.asin(min(1.0, math.dist(unit(*a), unit(*b)) / 2)) * 6371.0088


def region(
    name: str,
    *,
    healthy: bool = True,
    free: int = 10,
    load: float = 0.5,
    draining: bool = False,
    at: tuple[float, float] | None = None,
) -> RegionCandidate:
    lat, lon = at if at is not None else KNOWN_REGIONS[name]
    return RegionCandidate(name, lat, lon, healthy, free, load, draining)


def catalog(**overrides: dict[str, object]) -> tuple[RegionCandidate, ...]:
    """The 10 catalog regions, all eligible with equal load, some overridden: catalog(eu_west={...})."""
    return tuple(region(name, **overrides.get(name.replace("-", "_"), {})) for name in KNOWN_REGIONS)  # type: ignore[arg-type]


def nearest_catalog_region(origin: tuple[float, float]) -> str:
    return min(KNOWN_REGIONS, key=lambda n: chord_km(origin, KNOWN_REGIONS[n]))


@pytest.fixture(scope="module")
def test_locator() -> GeoLocator:
    return GeoLocator.open(CITY_TEST_DB)


@pytest.fixture
def placer(test_locator: GeoLocator) -> Placer:
    return Placer(test_locator)


# Everything in this database points at London, private and special ranges included, so only the
# locator's own refusal can keep those addresses from being "located".
SPECIAL_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "2001:db8::/32",
]


@pytest.fixture
def leaky_db(tmp_path: Path) -> Path:
    networks = {cidr: city_record(*LONDON, city="Leak") for cidr in SPECIAL_NETWORKS}
    networks["81.2.69.0/24"] = city_record(*LONDON, city="London")
    networks["8.8.8.0/24"] = {"country": {"iso_code": "US"}}  # a record without coordinates
    networks["2a00:1450::/32"] = city_record(50.11, 8.68, city="Frankfurt")
    return write_db(tmp_path / "leaky-city.mmdb", networks)


# ---- the four known users land in the nearest catalog region ---------------------------------


@pytest.mark.parametrize(
    ("ip", "expected", "km"),
    [
        (LONDON_IP, "eu-west", 465.1),  # London -> Dublin (Frankfurt is 635 km)
        (MILTON_IP, "us-west", 202.5),  # Milton, WA -> The Dalles, OR
        (CHANGCHUN_IP, "ap-northeast", 1525.6),  # Changchun -> Tokyo (Singapore: 5,185 km)
        (TOKYO_IP, "ap-northeast", 5.7),  # Tokyo -> Tokyo
    ],
)
def test_test_database_users_land_in_their_nearest_region(placer: Placer, ip: str, expected: str, km: float) -> None:
    decision = placer.place(PlacementInput(client_ip=ip, arrival_region="sa-east"), catalog())
    assert decision.origin is not None
    assert nearest_catalog_region(decision.origin) == expected  # independent cross-check
    assert decision.region == expected
    assert decision.reason == "client_ip"
    assert decision.distance_km == pytest.approx(km, abs=0.15)
    assert decision.distance_km == pytest.approx(chord_km(decision.origin, KNOWN_REGIONS[expected]), abs=0.1)


def test_changchun_is_nearer_tokyo_than_singapore(test_locator: GeoLocator) -> None:
    origin = test_locator.locate(CHANGCHUN_IP)
    assert origin is not None
    assert origin == pytest.approx((43.88, 125.3228))
    assert chord_km(origin, KNOWN_REGIONS["ap-northeast"]) == pytest.approx(1526, abs=5)
    assert chord_km(origin, KNOWN_REGIONS["ap-southeast"]) == pytest.approx(5185, abs=5)


def test_locator_reads_the_test_database(test_locator: GeoLocator) -> None:
    assert test_locator.locate(LONDON_IP) == pytest.approx(LONDON)
    assert test_locator.locate(MILTON_IP) == pytest.approx((47.2513, -122.3149))
    tokyo = test_locator.locate(TOKYO_IP)
    assert tokyo is not None and abs(tokyo[0] - 35.68) < 0.1 and abs(tokyo[1] - 139.75) < 0.1
    # An IPv4-mapped IPv6 address is the IPv4 address.
    assert test_locator.locate("::ffff:81.2.69.142") == pytest.approx(LONDON)
    assert test_locator.database_type == "GeoIP2-City"


def test_london_to_dublin_distance_is_plausible() -> None:
    # Great-circle London-Dublin is about 460 km.
    assert distance_km(*LONDON, *KNOWN_REGIONS["eu-west"]) == pytest.approx(460, rel=0.05)
    assert distance_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * 6371.0088)
    assert distance_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * 6371.0088)
    assert distance_km(10.0, 20.0, 10.0, 20.0) == 0.0


# ---- fallback --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"free": 0}, "full"),
        ({"free": -3}, "full"),
        ({"draining": True}, "draining"),
        ({"healthy": False}, "unhealthy"),
        ({"healthy": False, "free": 0, "draining": True}, "unhealthy"),
    ],
)
def test_nearest_region_unavailable_falls_back_to_the_next_nearest(override: dict[str, object], why: str) -> None:
    decision = Placer(None).place(PlacementInput(location=LONDON), catalog(eu_west=override))
    assert decision.region == "eu-central"
    assert decision.reason == "location+fallback"
    assert decision.fallback and decision.signal == "location"
    assert decision.distance_km == pytest.approx(chord_km(LONDON, KNOWN_REGIONS["eu-central"]), abs=0.1)
    first = decision.ranking[0]
    assert (first.name, first.eligible, first.why_not) == ("eu-west", False, why)
    assert decision.ranking[1] == RankedRegion("eu-central", decision.distance_km, True, None, 0.5)


def test_client_ip_fallback_skips_every_unavailable_nearer_region(placer: Placer) -> None:
    cands = catalog(eu_west={"free": 0}, eu_central={"healthy": False})
    decision = placer.place(PlacementInput(client_ip=LONDON_IP), cands)
    assert (decision.region, decision.reason) == ("us-east", "client_ip+fallback")
    assert decision.distance_km == pytest.approx(5897.8, abs=0.2)


def test_an_unavailable_region_farther_away_is_not_a_fallback() -> None:
    cands = catalog(au_southeast={"free": 0}, us_east={"healthy": False})
    decision = Placer(None).place(PlacementInput(location=LONDON), cands)
    assert (decision.region, decision.reason) == ("eu-west", "location")


def test_arrival_region_unavailable_falls_back_from_its_coordinates() -> None:
    decision = Placer(None).place(PlacementInput(arrival_region="eu-west"), catalog(eu_west={"draining": True}))
    assert (decision.region, decision.reason) == ("eu-central", "arrival_edge+fallback")
    assert decision.origin == KNOWN_REGIONS["eu-west"]
    assert decision.distance_km == pytest.approx(1087.7, abs=0.2)  # Dublin -> Frankfurt


# ---- pinned ----------------------------------------------------------------------------------


def test_pinned_region_wins_over_location_and_client_ip(placer: Placer) -> None:
    inp = PlacementInput(pinned_region="sa-east", location=CAPE_TOWN, client_ip=TOKYO_IP, arrival_region="eu-west")
    decision = placer.place(inp, catalog())
    assert (decision.region, decision.reason, decision.distance_km) == ("sa-east", "pinned", 0.0)
    assert decision.origin == KNOWN_REGIONS["sa-east"]


def test_pinned_region_unavailable_falls_back_to_the_nearest_to_it() -> None:
    inp = PlacementInput(pinned_region="eu-west", location=CAPE_TOWN)
    decision = Placer(None).place(inp, catalog(eu_west={"free": 0}))
    # Nearest to Dublin, not to Cape Town (that would be af-south).
    assert (decision.region, decision.reason) == ("eu-central", "pinned+fallback")
    assert decision.distance_km == pytest.approx(
        chord_km(KNOWN_REGIONS["eu-west"], KNOWN_REGIONS["eu-central"]), abs=0.1
    )


@pytest.mark.parametrize("name", ["mars-north", "EU-WEST", "eu-west ", ""])
def test_unknown_pinned_region_raises_region_unknown(name: str) -> None:
    with pytest.raises(RegionUnknown) as info:
        Placer(None).place(PlacementInput(pinned_region=name, location=LONDON), catalog())
    assert repr(name) in str(info.value)
    assert info.value.code == ErrorCode.REGION_UNKNOWN and info.value.status == 404


def test_unknown_pinned_region_is_reported_even_when_nothing_has_capacity() -> None:
    with pytest.raises(RegionUnknown, match="mars-north"):
        Placer(None).place(PlacementInput(pinned_region="mars-north"), ())


# ---- signal order and fall-through -----------------------------------------------------------


def test_location_wins_over_client_ip(placer: Placer) -> None:
    decision = placer.place(PlacementInput(location=CAPE_TOWN, client_ip=LONDON_IP), catalog())
    assert (decision.region, decision.reason) == ("af-south", "location")
    assert decision.origin == CAPE_TOWN


def test_client_ip_wins_over_arrival_and_default(placer: Placer) -> None:
    inp = PlacementInput(client_ip=MILTON_IP, arrival_region="eu-west", default_region="ap-south")
    assert placer.place(inp, catalog()).region == "us-west"


NON_PUBLIC_IPS = [
    "10.1.2.3",
    "127.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.10.20",
    "0.0.0.0",
    "100.64.0.1",
    "192.0.2.7",
    "198.18.0.1",
    "224.0.0.251",
    "239.255.255.250",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
]


@pytest.mark.parametrize("ip", NON_PUBLIC_IPS)
def test_non_public_ips_are_not_located_even_if_the_database_has_them(leaky_db: Path, ip: str) -> None:
    with GeoLocator.open(leaky_db) as locator:
        key = ip.partition("%")[0]
        if key.startswith("::ffff:"):
            key = key.removeprefix("::ffff:")
        with maxminddb.open_database(str(leaky_db)) as raw:
            assert raw.get(key) is not None, "the database should hold a record for this address"
        assert locator.locate(ip) is None
        assert is_locatable_ip(ip) is False


@pytest.mark.parametrize("ip", NON_PUBLIC_IPS)
def test_non_public_ips_fall_through_to_arrival_region_then_default(leaky_db: Path, ip: str) -> None:
    with GeoLocator.open(leaky_db) as locator:
        placer = Placer(locator)
        assert locator.locate(LONDON_IP) == pytest.approx(LONDON)  # the database itself works
        to_arrival = placer.place(PlacementInput(client_ip=ip, arrival_region="us-east"), catalog())
        assert (to_arrival.region, to_arrival.reason, to_arrival.distance_km) == ("us-east", "arrival_edge", 0.0)
        to_default = placer.place(PlacementInput(client_ip=ip, default_region="ap-south"), catalog())
        assert (to_default.region, to_default.reason, to_default.distance_km) == ("ap-south", "default", 0.0)


def test_public_ip_without_coordinates_or_record_falls_through(leaky_db: Path) -> None:
    with GeoLocator.open(leaky_db) as locator:
        assert locator.locate("8.8.8.8") is None  # record without location
        assert locator.locate("9.9.9.9") is None  # no record
        assert locator.locate("2a00:1450::1") == pytest.approx((50.11, 8.68))
        placer = Placer(locator)
        for ip in ("8.8.8.8", "9.9.9.9"):
            decision = placer.place(PlacementInput(client_ip=ip, arrival_region="ap-south"), catalog())
            assert (decision.region, decision.reason) == ("ap-south", "arrival_edge")
        decision = placer.place(PlacementInput(client_ip="2a00:1450::1", arrival_region="ap-south"), catalog())
        assert (decision.region, decision.reason) == ("eu-central", "client_ip")


def test_without_a_locator_client_ip_falls_through() -> None:
    decision = Placer(None).place(PlacementInput(client_ip=LONDON_IP, arrival_region="sa-east"), catalog())
    assert (decision.region, decision.reason) == ("sa-east", "arrival_edge")


def test_arrival_region_not_among_candidates_falls_through_to_default() -> None:
    inp = PlacementInput(arrival_region="mars-north", default_region="af-south")
    decision = Placer(None).place(inp, catalog())
    assert (decision.region, decision.reason, decision.distance_km) == ("af-south", "default", 0.0)


def test_default_region_unavailable_falls_back_from_its_coordinates() -> None:
    decision = Placer(None).place(PlacementInput(default_region="us-east"), catalog(us_east={"free": 0}))
    assert (decision.region, decision.reason) == ("us-west", "default+fallback")


def test_no_signal_picks_the_least_loaded_eligible_region() -> None:
    cands = catalog(
        ap_south={"load": 0.05, "free": 0},  # least loaded but full
        af_south={"load": 0.1},
        sa_east={"load": 0.2},
    )
    for inp in (PlacementInput(), PlacementInput(default_region="mars-north"), PlacementInput(arrival_region="x")):
        decision = Placer(None).place(inp, cands)
        assert (decision.region, decision.reason, decision.distance_km, decision.origin) == (
            "af-south",
            "default",
            None,
            None,
        )
        assert [r.name for r in decision.ranking[:3]] == ["ap-south", "af-south", "sa-east"]
        assert all(r.distance_km is None for r in decision.ranking)


def test_no_signal_equal_loads_pick_the_first_name() -> None:
    decision = Placer(None).place(PlacementInput(), catalog())
    assert decision.region == sorted(KNOWN_REGIONS)[0] == "af-south"


# ---- ties ------------------------------------------------------------------------------------


def test_equally_near_regions_are_decided_by_load_then_name() -> None:
    origin = (10.0, 9.9)
    near = region("near", at=(10.0, 10.0), load=0.7)
    beside = region("beside", at=(10.0, 10.004), load=0.2)  # 0.44 km farther than "near"
    decision = Placer(None).place(PlacementInput(location=origin), (near, beside))
    assert chord_km(origin, (10.0, 10.004)) - chord_km(origin, (10.0, 10.0)) == pytest.approx(0.44, abs=0.01)
    assert (decision.region, decision.reason) == ("beside", "location")

    same_load = (region("zulu", at=(10.0, 10.0), load=0.3), region("alpha", at=(10.0, 10.0), load=0.3))
    assert Placer(None).place(PlacementInput(location=origin), same_load).region == "alpha"


def test_a_clearly_nearer_region_wins_over_a_less_loaded_one() -> None:
    origin = (10.0, 9.9)
    near = region("near", at=(10.0, 10.0), load=0.9)
    farther = region("farther", at=(10.0, 10.05), load=0.0)  # 5.5 km farther
    decision = Placer(None).place(PlacementInput(location=origin), (farther, near))
    assert decision.region == "near"
    assert decision.distance_km == pytest.approx(chord_km(origin, (10.0, 10.0)), abs=0.1)


def test_an_unavailable_region_within_the_tie_distance_is_not_a_fallback() -> None:
    origin = (10.0, 9.9)
    slightly_nearer = region("full-one", at=(10.0, 9.996), free=0)  # 0.44 km nearer
    clearly_nearer = region("full-two", at=(10.0, 9.97), free=0)  # 3.3 km nearer
    chosen = region("open", at=(10.0, 10.0))
    placer = Placer(None)
    assert placer.place(PlacementInput(location=origin), (slightly_nearer, chosen)).reason == "location"
    decision = placer.place(PlacementInput(location=origin), (clearly_nearer, chosen))
    assert (decision.region, decision.reason) == ("open", "location+fallback")


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_ip",
    [
        "999.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "abc",
        "",
        " 1.2.3.4",
        "1.2.3.4 ",
        "01.2.3.4",
        "::g",
        "1::2::3",
        "fe80::1%",
        "1.2.3.4\x00",
    ],
)
def test_malformed_client_ip_is_a_bad_request(bad_ip: str) -> None:
    with pytest.raises(BadRequest) as info:
        Placer(None).place(PlacementInput(client_ip=bad_ip), catalog())
    assert "client_ip" in info.value.fields
    assert info.value.status == 400
    # Validated even when a stronger signal decides.
    with pytest.raises(BadRequest):
        Placer(None).place(PlacementInput(pinned_region="eu-west", client_ip=bad_ip), catalog())
    with pytest.raises(BadRequest):
        normalize_client_ip(bad_ip)


def test_locator_refuses_malformed_ip(test_locator: GeoLocator) -> None:
    with pytest.raises(BadRequest):
        test_locator.locate("not-an-ip")


@pytest.mark.parametrize(
    "location",
    [(91.0, 0.0), (-90.01, 0.0), (0.0, 180.5), (0.0, -181.0), (math.nan, 0.0), (0.0, math.inf), (True, 0.0)],
)
def test_location_out_of_range_is_a_bad_request(location: tuple[float, float]) -> None:
    with pytest.raises(BadRequest) as info:
        Placer(None).place(PlacementInput(location=location), catalog())
    assert "location" in info.value.fields


def test_location_boundaries_are_valid() -> None:
    placer = Placer(None)
    assert placer.place(PlacementInput(location=(90.0, 180.0)), catalog()).reason == "location"
    assert placer.place(PlacementInput(location=(-90.0, -180.0)), catalog()).region == "af-south"
    assert placer.place(PlacementInput(location=(-34, 19)), catalog()).region == "af-south"  # ints


def test_no_eligible_region_is_no_capacity() -> None:
    everything_down = tuple(
        region(n, free=0) if i % 3 == 0 else region(n, healthy=False) if i % 3 == 1 else region(n, draining=True)
        for i, n in enumerate(KNOWN_REGIONS)
    )
    for inp in (
        PlacementInput(location=LONDON),
        PlacementInput(pinned_region="eu-west"),
        PlacementInput(arrival_region="us-east"),
        PlacementInput(),
    ):
        with pytest.raises(NoCapacity) as info:
            Placer(None).place(inp, everything_down)
        assert info.value.status == 503
        assert info.value.fields["regions"]["eu-west"] in {"full", "unhealthy", "draining"}
    with pytest.raises(NoCapacity):
        Placer(None).place(PlacementInput(), ())


def test_candidates_with_duplicate_names_or_bad_coordinates_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Placer(None).place(PlacementInput(), (region("eu-west"), region("eu-west")))
    with pytest.raises(ValueError, match="coordinates"):
        Placer(None).place(PlacementInput(), (region("eu-west", at=(95.0, 0.0)),))


# ---- GeoIP database errors -------------------------------------------------------------------


def test_missing_database_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "GeoLite2-City.mmdb"
    with pytest.raises(GeoIPDatabaseError) as info:
        GeoLocator.open(missing)
    assert str(missing) in str(info.value) and info.value.path == str(missing)


def test_directory_instead_of_database_names_it(tmp_path: Path) -> None:
    with pytest.raises(GeoIPDatabaseError, match=str(tmp_path)):
        GeoLocator.open(tmp_path)


def test_country_database_is_refused_naming_the_file_and_type(tmp_path: Path) -> None:
    path = write_country_db(tmp_path / "GeoIP2-Country.mmdb")
    with maxminddb.open_database(str(path)) as raw:  # a valid MaxMind DB...
        assert raw.metadata().database_type == "GeoIP2-Country"
    with pytest.raises(GeoIPDatabaseError) as info:  # ...but without coordinates
        GeoLocator.open(path)
    assert str(path) in str(info.value)
    assert "GeoIP2-Country" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"this is not a MaxMind DB file\n" * 100])
def test_garbage_file_is_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = write_garbage(tmp_path / "garbage.mmdb")
    path.write_bytes(content)
    with pytest.raises(GeoIPDatabaseError) as info:
        GeoLocator.open(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_database_names_the_file(tmp_path: Path) -> None:
    path = write_db(tmp_path / "locked.mmdb", {"81.2.69.0/24": city_record(*LONDON)})
    path.chmod(0)
    try:
        with pytest.raises(GeoIPDatabaseError, match=str(path)):
            GeoLocator.open(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("database_type", ["GeoIP2-City", "GeoLite2-City", "DBIP-City-Lite", "GeoIP2-City-Europe"])
def test_city_type_databases_are_accepted(tmp_path: Path, database_type: str) -> None:
    path = write_db(tmp_path / "city.mmdb", {"81.2.69.0/24": city_record(*LONDON)}, database_type=database_type)
    with GeoLocator.open(path) as locator:
        assert locator.database_type == database_type
        assert locator.locate(LONDON_IP) == pytest.approx(LONDON)


def test_ipv4_only_database_does_not_locate_ipv6(tmp_path: Path) -> None:
    path = write_db(tmp_path / "v4.mmdb", {"81.2.69.0/24": city_record(*LONDON)}, ip_version=4)
    with GeoLocator.open(path) as locator:
        assert locator.locate(LONDON_IP) == pytest.approx(LONDON)
        assert locator.locate("::ffff:81.2.69.142") == pytest.approx(LONDON)
        assert locator.locate("2a00:1450::1") is None


def test_closed_locator_refuses_lookups(tmp_path: Path) -> None:
    path = write_db(tmp_path / "city.mmdb", {"81.2.69.0/24": city_record(*LONDON)})
    locator = GeoLocator.open(path)
    locator.close()
    with pytest.raises(ValueError):
        locator.locate(LONDON_IP)


# ---- the address classifier against the standard library -------------------------------------

# Blocks this module treats as locating nobody beyond what `ipaddress` flags on every Python version.
EXTRA_NON_PUBLIC = [
    ipaddress.ip_network(n) for n in ("100.64.0.0/10", "192.0.0.0/24", "2001::/23", "2002::/16", "3fff::/20")
]


def stdlib_says_non_public(text: str) -> bool:
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    flagged = (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_unspecified
        or addr.is_multicast
        or addr.is_reserved
        or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)
    )
    return flagged or any(addr.version == net.version and addr in net for net in EXTRA_NON_PUBLIC)


def _boundary_addresses() -> list[str]:
    nets = [ipaddress.ip_network(n) for n in SPECIAL_NETWORKS] + EXTRA_NON_PUBLIC
    nets += [ipaddress.ip_network(n) for n in ("2000::/3", "::ffff:0:0/96", "198.51.100.0/24", "203.0.113.0/24")]
    out: list[str] = []
    for net in nets:
        top = 2**net.max_prefixlen - 1
        first, last = int(net.network_address), int(net.broadcast_address)
        for v in (first - 1, first, first + 1, last - 1, last, last + 1):
            if 0 <= v <= top:
                out.append(str(ipaddress.ip_address(v) if net.version == 4 else ipaddress.IPv6Address(v)))
    return out


def test_classifier_matches_the_standard_library_at_range_boundaries() -> None:
    addresses = _boundary_addresses()
    assert len(addresses) > 100
    wrong = [a for a in addresses if is_locatable_ip(a) == stdlib_says_non_public(a)]
    assert wrong == []


def test_classifier_matches_the_standard_library_on_random_addresses() -> None:
    rng = random.Random(20240601)
    addresses = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20_000)]
    addresses += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(5_000)]
    addresses += [str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))) for _ in range(5_000)]  # 2000::/3
    addresses += [f"::ffff:{ipaddress.IPv4Address(rng.getrandbits(32))}" for _ in range(2_000)]
    wrong = [a for a in addresses if is_locatable_ip(a) == stdlib_says_non_public(a)]
    assert wrong == []
    # The samples exercise both answers.
    assert 0 < sum(map(is_locatable_ip, addresses)) < len(addresses)


# ---- many regions: the choice agrees with a brute-force oracle ---------------------------------


def oracle(origin: tuple[float, float], cands: list[RegionCandidate]) -> tuple[str, bool]:
    """(region, fallback) by the rules, written out naively."""
    dist = {c.name: chord_km(origin, (c.lat, c.lon)) for c in cands}
    ok = [c for c in cands if c.healthy and not c.draining and c.free_capacity > 0]
    d_min = min(dist[c.name] for c in ok)
    winner = min((c for c in ok if dist[c.name] <= d_min + 1.0), key=lambda c: (c.load, c.name))
    fallback = any(dist[c.name] < d_min - 1.0 for c in cands if c not in ok)
    return winner.name, fallback


def test_choices_among_100_regions_match_a_brute_force_oracle() -> None:
    rng = random.Random(7)
    placer = Placer(None)
    for _ in range(300):
        cands: list[RegionCandidate] = []
        for i in range(100):
            if i and rng.random() < 0.05:  # a twin of an earlier region: exercises ties
                twin = cands[rng.randrange(len(cands))]
                lat, lon = twin.lat, twin.lon
            else:
                lat, lon = math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180)
            roll = rng.random()
            cands.append(
                RegionCandidate(
                    f"r{i:03d}",
                    lat,
                    lon,
                    healthy=roll > 0.1,
                    free_capacity=0 if 0.1 < roll < 0.3 else rng.randint(1, 50),
                    load=rng.choice([0.1, 0.2, 0.3, rng.random()]),
                    draining=0.3 < roll < 0.35,
                )
            )
        origin = (math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180))
        as_tuple = tuple(cands)
        for given in (as_tuple, as_tuple, cands):  # fresh table, cached table, list
            decision = placer.place(PlacementInput(location=origin), given)
            name, fallback = oracle(origin, cands)
            assert (decision.region, decision.fallback) == (name, fallback)
            chosen = next(c for c in cands if c.name == name)
            assert decision.distance_km == pytest.approx(chord_km(origin, (chosen.lat, chosen.lon)), abs=0.06)
            ranked = {r.name: r for r in decision.ranking}
            assert ranked[name].distance_km == decision.distance_km and ranked[name].eligible


# ---- caches never serve stale state ---------------------------------------------------------


def test_a_new_candidate_tuple_is_not_confused_with_the_previous_one() -> None:
    placer = Placer(None)
    inp = PlacementInput(location=LONDON)
    assert placer.place(inp, catalog()).region == "eu-west"
    assert placer.place(inp, catalog(eu_west={"free": 0})).region == "eu-central"
    assert placer.place(inp, catalog()).region == "eu-west"


def test_a_list_mutated_between_calls_is_read_afresh() -> None:
    placer = Placer(None)
    inp = PlacementInput(location=LONDON)
    cands = list(catalog())
    assert placer.place(inp, cands).region == "eu-west"
    cands[[c.name for c in cands].index("eu-west")] = region("eu-west", healthy=False)
    assert placer.place(inp, cands).region == "eu-central"


def test_a_region_that_moves_is_measured_at_its_new_coordinates() -> None:
    placer = Placer(None)
    inp = PlacementInput(location=LONDON)
    assert placer.place(inp, catalog()).region == "eu-west"
    moved = tuple(region(c.name, at=CAPE_TOWN) if c.name == "eu-west" else c for c in catalog())
    decision = placer.place(inp, moved)
    assert decision.region == "eu-central"
    assert next(r for r in decision.ranking if r.name == "eu-west").distance_km == pytest.approx(
        chord_km(LONDON, CAPE_TOWN), abs=0.1
    )


# ---- the decision and its wire form ----------------------------------------------------------


def test_to_wire_is_the_api_placement_field(placer: Placer) -> None:
    decision = placer.place(PlacementInput(client_ip=LONDON_IP), catalog(eu_west={"load": 0.25, "free": 0}))
    wire = decision.to_wire()
    assert json.loads(json.dumps(wire)) == wire
    assert set(wire) == {"region", "reason", "distance_km", "ranking"}
    assert (wire["region"], wire["reason"], wire["distance_km"]) == ("eu-central", "client_ip+fallback", 635.4)
    assert wire["ranking"][0] == {
        "name": "eu-west",
        "distance_km": 465.1,
        "eligible": False,
        "why_not": "full",
        "load": 0.25,
    }
    assert [r["name"] for r in wire["ranking"]] == sorted(
        KNOWN_REGIONS, key=lambda n: chord_km(LONDON, KNOWN_REGIONS[n])
    )
    distances = [r["distance_km"] for r in wire["ranking"]]
    assert distances == sorted(distances) and len(distances) == 10
    assert [r["name"] for r in decision.to_wire(ranking_limit=2)["ranking"]] == ["eu-west", "eu-central"]


def test_decisions_compare_by_value() -> None:
    placer = Placer(None)
    a = placer.place(PlacementInput(location=LONDON), catalog())
    b = placer.place(PlacementInput(location=LONDON), catalog())
    assert a == b and hash(a) == hash(b)
    assert a != placer.place(PlacementInput(location=CAPE_TOWN), catalog())
    manual = PlacementDecision("eu-west", "location", a.distance_km, LONDON, catalog())
    ranking: Ranking = manual.ranking
    assert manual == a and ranking == a.ranking and len(ranking) == 10
