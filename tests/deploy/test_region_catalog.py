"""infra/terraform: formatted, and the provider-free region catalog passes its `terraform test`
cases and names the region at fault when the catalog is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.deploy.hcl import ROOT, load
from tests.deploy.terraform import run, terraform_binary

TERRAFORM_DIR = ROOT / "infra" / "terraform"
CATALOG = TERRAFORM_DIR / "modules" / "region-catalog"


@pytest.fixture
def terraform() -> str:
    return terraform_binary()


@pytest.fixture
def catalog_copy(tmp_path: Path, terraform: str) -> Path:
    """The module in a scratch directory, initialised, so no .terraform lands in the repository."""
    work = tmp_path / "region-catalog"
    shutil.copytree(CATALOG, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    done = run(terraform, ["init", "-backend=false", "-input=false"], work, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return work


def test_all_terraform_is_formatted(terraform: str, tmp_path: Path) -> None:
    done = run(terraform, ["fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)], ROOT, tmp_path)
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}{done.stderr}"


def test_region_catalog_passes_its_terraform_tests(terraform: str, catalog_copy: Path) -> None:
    done = run(terraform, ["test"], catalog_copy, catalog_copy.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed" in done.stdout and " passed" in done.stdout
    expected = (CATALOG / "tests" / "catalog.tftest.hcl").read_text().count('\nrun "')
    assert f"{expected} passed" in done.stdout, done.stdout


def _plan(terraform: str, work: Path, variables: dict[str, object]) -> tuple[int, str]:
    var_file = work / "case.tfvars.json"
    var_file.write_text(json.dumps(variables))
    done = run(terraform, ["plan", "-input=false", f"-var-file={var_file}"], work, work.parent)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def _region(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "lat": 10, "lon": 10, "capacity": 10, "public_url": f"https://{name}.example.com"} | fields


def test_bad_coordinates_fail_the_plan_naming_the_region(terraform: str, catalog_copy: Path) -> None:
    status, output = _plan(
        terraform,
        catalog_copy,
        {
            "control_url": "https://control.example.com",
            "regions": [_region("eu-west"), _region("atlantis", lat=-95.5), _region("us-east")],
        },
    )
    assert status != 0
    assert "Coordinates out of range" in output and "atlantis (lat -95.5" in output, output
    assert "eu-west (" not in output and "us-east (" not in output


def test_bad_capacity_fails_the_plan_naming_the_region(terraform: str, catalog_copy: Path) -> None:
    status, output = _plan(
        terraform,
        catalog_copy,
        {"control_url": "https://control.example.com", "regions": [_region("eu-west"), _region("empty", capacity=0)]},
    )
    assert status != 0 and "empty (capacity 0)" in output, output


def test_the_aws_example_catalog_is_a_valid_catalog(terraform: str, catalog_copy: Path) -> None:
    example = load(TERRAFORM_DIR / "aws" / "example.tfvars")
    status, output = _plan(
        terraform, catalog_copy, {"control_url": example["control_url"], "regions": example["regions"]}
    )
    assert status == 0, output
