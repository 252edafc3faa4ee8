"""Which executors an edge builds from its settings, and Nomad's own environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.executors.nomad import NomadExecutor
from edge.executors.setup import build_executors
from edge.settings import EdgeSettings
from sync.models import TemplateSpec


async def _no_exit(_: object) -> None:
    return None


def settings(tmp_path: Path, **kw: object) -> EdgeSettings:
    return EdgeSettings(region="eu-west", control_url="http://127.0.0.1:1", token="t", data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_process_only_without_a_nomad_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOMAD_ADDR", raising=False)
    assert build_executors(settings(tmp_path), _no_exit).kinds == ["process"]


def test_nomad_from_nomads_own_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_ADDR", "http://127.0.0.1:4646")
    monkeypatch.setenv("NOMAD_TOKEN", "secret-acl-token")
    monkeypatch.setenv("NOMAD_NAMESPACE", "meridian")
    monkeypatch.setenv("NOMAD_REGION", "global")
    s = settings(tmp_path)
    assert s.nomad_addr == "http://127.0.0.1:4646" and s.nomad_namespace == "meridian" and s.nomad_region == "global"
    assert "secret-acl-token" not in repr(s) and "secret-acl-token" not in str(s.model_dump())
    executors = build_executors(s, _no_exit)
    assert executors.kinds == ["nomad", "process"]
    nomad = executors.get("nomad")
    assert isinstance(nomad, NomadExecutor)
    client = nomad._client.requester_settings
    assert client["token"] == "secret-acl-token" and client["namespace"] == "meridian" and client["region"] == "global"


def test_a_flag_wins_and_junk_addresses_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_ADDR", "http://10.0.0.1:4646")
    assert settings(tmp_path, nomad_addr="https://nomad.internal:4646").nomad_addr == "https://nomad.internal:4646"
    for bad in ("nomad:4646", "http://h:4646/v1/jobs?x", "http://a b", "file:///etc/passwd"):
        with pytest.raises(ValidationError):
            settings(tmp_path, nomad_addr=bad)


def test_a_nomad_template_takes_an_image_or_an_argv() -> None:
    assert TemplateSpec(executor="nomad", argv=["/bin/app"]).argv == ["/bin/app"]
    assert TemplateSpec(executor="nomad", image="app:1").image == "app:1"
    with pytest.raises(ValidationError, match=r"image \(docker\) or an argv \(raw_exec\)"):
        TemplateSpec(executor="nomad")
