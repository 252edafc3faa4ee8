"""Settings given on the command line are validated like every other setting: a value out of its
bounds is a CLI error (exit 2, the field named), never silently accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import control.server
import edge.app
from control.settings import ControlSettings
from edge.settings import EdgeSettings
from meridian.cli import app

EDGE = ["edge", "serve", "--region", "eu-west", "--control-url", "http://127.0.0.1:9", "--token", "t" * 20]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The settings `serve` would have run with (nothing is started)."""
    seen: list[object] = []
    monkeypatch.setattr(edge.app, "serve", seen.append)
    monkeypatch.setattr(control.server, "serve", seen.append)
    return seen


@pytest.mark.parametrize("value", ["5", "0", "-1", "1023"])
def test_a_max_body_bytes_below_its_bound_is_a_cli_error(served: list[object], tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(app, [*EDGE, "--data-dir", str(tmp_path), "--max-body-bytes", value])
    assert result.exit_code == 2, result.output
    assert "max_body_bytes" in result.output
    assert served == []


def test_a_max_body_bytes_within_bounds_reaches_the_edge(served: list[object], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*EDGE, "--data-dir", str(tmp_path), "--max-body-bytes", "2000000"])
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert isinstance(settings, EdgeSettings) and settings.max_body_bytes == 2_000_000


def test_the_default_region_flag_is_part_of_the_validated_settings(served: list[object], tmp_path: Path) -> None:
    args = ["control", "serve", "--data-dir", str(tmp_path), "--admin-token", "a" * 20, "--default-region", "eu-west"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert isinstance(settings, ControlSettings) and settings.placement.default_region == "eu-west"


def test_assigning_an_edge_setting_is_validated_too(tmp_path: Path) -> None:
    settings = EdgeSettings(region="eu-west", control_url="http://127.0.0.1:9", token="t" * 20, data_dir=tmp_path)
    with pytest.raises(ValidationError, match="max_body_bytes"):
        settings.max_body_bytes = 5
    with pytest.raises(ValidationError, match="max_client_connections"):
        settings.max_client_connections = 0
