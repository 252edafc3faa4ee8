"""The dashboard map's projection and its committed land geometry (Natural Earth 1:110m)."""

from __future__ import annotations

import itertools
import json
import re
from importlib import resources

import pytest

from control.ui.projection import HEIGHT, WIDTH, invert, project
from control.ui.tools.build_land import build, decode_arcs, path_data, ring, unwrap
from sync.catalog import KNOWN_REGIONS


def test_projection_puts_the_corners_and_the_origin_where_a_plate_carree_has_them() -> None:
    assert project(90, -180) == (0.0, 0.0)
    assert project(-90, 180) == (WIDTH, HEIGHT)
    assert project(0, 0) == (WIDTH / 2, HEIGHT / 2)
    x, y = project(35.68, 139.69)  # Tokyo: east and north of the centre
    assert x == pytest.approx(888.03, abs=0.01) and y == pytest.approx(150.89, abs=0.01)


@pytest.mark.parametrize("name", sorted(KNOWN_REGIONS))
def test_invert_undoes_project(name: str) -> None:
    known = KNOWN_REGIONS[name]
    lat, lon = invert(*project(known.lat, known.lon))
    assert (lat, lon) == pytest.approx((known.lat, known.lon))


def test_invert_clamps_points_beyond_the_map_edges() -> None:
    assert invert(-5, -5) == (90.0, -180.0)
    assert invert(WIDTH + 5, HEIGHT + 5) == (-90.0, 180.0)


@pytest.mark.parametrize(("lat", "lon"), [(91, 0), (-91, 0), (0, 181), (0, -180.5), (float("nan"), 0)])
def test_projection_refuses_points_not_on_earth(lat: float, lon: float) -> None:
    with pytest.raises(ValueError):
        project(lat, lon)


def test_topojson_arcs_are_decoded_from_deltas_and_joined_into_rings() -> None:
    topology = {
        "transform": {"scale": [1.0, 1.0], "translate": [-10.0, -5.0]},
        "arcs": [[[0, 0], [10, 0], [0, 10]], [[10, 10], [-10, 0], [0, -10]]],
    }
    arcs = decode_arcs(topology)
    assert arcs[0] == [(-10.0, -5.0), (0.0, -5.0), (0.0, 5.0)]
    assert ring(arcs, [0, 1]) == [(-10.0, -5.0), (0.0, -5.0), (0.0, 5.0), (-10.0, 5.0), (-10.0, -5.0)]
    assert ring(arcs, [~1])[0] == (-10.0, -5.0)  # reversed arc


def test_a_ring_across_the_antimeridian_is_drawn_on_both_edges_without_a_seam() -> None:
    fiji_like = [(178.0, -17.0), (-179.0, -17.0), (-179.0, -18.0), (178.0, -18.0), (178.0, -17.0)]
    assert [lon for lon, _ in unwrap(fiji_like)] == [178.0, 181.0, 181.0, 178.0, 178.0]
    rings = _rings(path_data(iter([fiji_like])))
    assert len(rings) == 2  # the ring, and its copy one map width to the left
    xs = [x for pts in rings for x, _ in pts]
    assert max(xs) - min(xs) > WIDTH - 10
    for pts in rings:  # no stroke across the whole map
        assert all(abs(a[0] - b[0]) < 20 for a, b in itertools.pairwise(pts))


def test_a_ring_around_the_pole_is_closed_along_the_map_edge() -> None:
    antarctica_like = [(-180.0 + 10 * i, -70.0) for i in range(36)] + [(-180.0, -70.0)]
    unwrapped = unwrap(antarctica_like)
    assert unwrapped[-2:] == [(unwrapped[-3][0], -90.0), (-180.0, -90.0)]


def _rings(d: str) -> list[list[tuple[float, float]]]:
    return [
        [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+) (-?[\d.]+)", part)]
        for part in d.split("Z")
        if part
    ]


def _inside(point: tuple[float, float], rings: list[list[tuple[float, float]]]) -> bool:
    """Even-odd rule over every ring, the way the land path is filled."""
    px, py = point
    inside = False
    for pts in rings:
        for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
            if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
    return inside


LAND = json.loads(resources.files("control.ui").joinpath("static/land.json").read_text())


@pytest.mark.parametrize(
    ("place", "lat", "lon"),
    [
        ("Paris", 48.86, 2.35),
        ("Chad", 15.0, 19.0),
        ("Brazil", -10.0, -55.0),
        ("Australia", -25.0, 134.0),
        ("Siberia", 62.0, 100.0),
        ("Tokyo", 36.0, 139.0),
        ("Chukotka", 66.0, 175.0),
        ("Antarctica", -85.0, 0.0),
    ],
)
def test_the_committed_land_covers_land(place: str, lat: float, lon: float) -> None:
    assert _inside(project(lat, lon), _rings(LAND["d"])), place


@pytest.mark.parametrize(
    ("place", "lat", "lon"),
    [
        ("mid-Atlantic", 30.0, -40.0),
        ("Pacific", 0.0, -150.0),
        ("Indian Ocean", -20.0, 80.0),
        ("Mediterranean", 35.0, 18.0),
        ("Tasman Sea", -40.0, 160.0),
        ("Arctic Ocean", 85.0, 0.0),
    ],
)
def test_the_committed_land_leaves_the_seas_open(place: str, lat: float, lon: float) -> None:
    assert not _inside(project(lat, lon), _rings(LAND["d"])), place


def test_the_committed_land_is_small_and_names_its_source() -> None:
    assert (LAND["width"], LAND["height"]) == (WIDTH, HEIGHT)
    assert "Natural Earth" in LAND["source"] and "public domain" in LAND["source"]
    assert len(json.dumps(LAND)) < 120_000
    assert len(_rings(LAND["d"])) > 100  # continents and islands, not a handful of blobs


def test_build_turns_a_topology_into_the_committed_format() -> None:
    topology = {
        "type": "Topology",
        "transform": {"scale": [1.0, 1.0], "translate": [0.0, 0.0]},
        "arcs": [[[0, 0], [10, 0], [0, 10], [-10, 0], [0, -10]]],
        "objects": {"land": {"type": "GeometryCollection", "geometries": [{"type": "Polygon", "arcs": [[0]]}]}},
    }
    built = build(topology)
    assert built["d"] == "M500 250L527.8 250L527.8 222.2L500 222.2L500 250Z"
