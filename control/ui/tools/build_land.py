"""Convert Natural Earth 1:110m land (TopoJSON from the npm `world-atlas` package) into the
dashboard's pre-projected SVG path, `control/ui/static/land.json`. Run once; the output is committed.

    cd "$(mktemp -d)" && npm pack world-atlas && tar xzf world-atlas-*.tgz
    python -m control.ui.tools.build_land package/land-110m.json control/ui/static/land.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from control.ui.projection import HEIGHT, WIDTH, project

Point = tuple[float, float]
SOURCE = "Natural Earth 1:110m land (public domain), via world-atlas 2.0.2 (ISC, (c) 2013-2019 Michael Bostock)"


def decode_arcs(topology: dict[str, Any]) -> list[list[Point]]:
    """Absolute (lon, lat) points of every arc of a quantized, delta-encoded topology."""
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring(arcs: list[list[Point]], indexes: list[int]) -> list[Point]:
    """One closed ring from arc indexes (a negative index ~i means arc i reversed)."""
    points: list[Point] = []
    for index in indexes:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc if not points else arc[1:])  # consecutive arcs share their end point
    return points


def polygons(topology: dict[str, Any], name: str) -> Iterator[list[list[Point]]]:
    arcs = decode_arcs(topology)
    for geometry in topology["objects"][name]["geometries"]:
        if geometry["type"] == "Polygon":
            yield [ring(arcs, r) for r in geometry["arcs"]]
        elif geometry["type"] == "MultiPolygon":
            for polygon in geometry["arcs"]:
                yield [ring(arcs, r) for r in polygon]


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def unwrap(points: list[Point]) -> list[Point]:
    """The ring with longitudes made continuous across the antimeridian (they may leave [-180, 180])."""
    out: list[Point] = []
    shift = 0.0
    for lon, lat in points:
        if out:
            step = lon + shift - out[-1][0]
            if step > 180.0:
                shift -= 360.0
            elif step < -180.0:
                shift += 360.0
        out.append((lon + shift, lat))
    if abs(out[-1][0] - out[0][0]) > 180.0:
        # The ring winds around a pole (Antarctica): close it along the map's bottom (or top) edge.
        pole = -90.0 if sum(lat for _, lat in out) < 0 else 90.0
        out += [(out[-1][0], pole), (out[0][0], pole)]
    return out


def _flat(lat: float, lon: float) -> tuple[float, float]:
    """`project` continued beyond lon ±180, for unwrapped rings."""
    x, y = project(min(max(lat, -90.0), 90.0), 0.0)
    return x + lon / 360.0 * WIDTH, y


def copies(points: list[Point]) -> Iterator[list[tuple[float, float]]]:
    """The projected ring, and a copy shifted one map width for each side it sticks out of:
    the map clips them, so a ring across the antimeridian shows on both edges without a seam."""
    flat = [_flat(lat, lon) for lon, lat in unwrap(points)]
    xs = [x for x, _ in flat]
    for offset in (-WIDTH, 0.0, WIDTH):
        if min(xs) + offset < WIDTH and max(xs) + offset > 0.0:
            yield [(x + offset, y) for x, y in flat]


def path_data(rings: Iterator[list[Point]]) -> str:
    """SVG path data of projected rings, 0.1 units precise, repeated points dropped."""
    out = []
    for points in rings:
        for projected in copies(points):
            cmds: list[str] = []
            last = ""
            for x, y in projected:
                xy = f"{_fmt(x)} {_fmt(y)}"
                if xy != last:
                    cmds.append(("M" if not cmds else "L") + xy)
                    last = xy
            if len(cmds) >= 3:
                out.append("".join(cmds) + "Z")
    return "".join(out)


def build(topology: dict[str, Any]) -> dict[str, Any]:
    rings = (r for polygon in polygons(topology, "land") for r in polygon)
    return {"source": SOURCE, "width": WIDTH, "height": HEIGHT, "d": path_data(rings)}


def main(argv: list[str]) -> None:
    source, target = Path(argv[0]), Path(argv[1])
    target.write_text(json.dumps(build(json.loads(source.read_text())), separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
