"""A fresh clone stands on its own: nothing in the repository reaches outside it for data or docs."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Built from parts so that this file does not match itself.
OUTSIDE = ("../" + "shared", '"shared" / ' + '"data"', "/work/" + "shared")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    paths = [REPO / n for n in names.decode().split("\0") if n]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:4096]]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    offenders = [
        f"{p.relative_to(REPO)}: {needle}"
        for p in tracked_text_files()
        for needle in OUTSIDE
        if needle in p.read_text(errors="replace")
    ]
    assert offenders == []


def test_the_geoip_test_databases_are_in_the_repository_with_their_license() -> None:
    geoip = REPO / "tests" / "data" / "geoip"
    for name in ("GeoIP2-City-Test.mmdb", "GeoLite2-City-Test.mmdb", "LICENSE-MIT", "README.md"):
        assert (geoip / name).stat().st_size > 0, name
