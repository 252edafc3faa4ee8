"""Template env references to edge-side secrets: resolved from the edge's environment only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.template_env import MissingEdgeSecret, missing_edge_secrets, resolve_env
from sync.models import FromEdgeEnv, TemplateSpec


def test_references_resolve_from_the_given_environment_and_literals_stay() -> None:
    env: dict[str, str | FromEdgeEnv] = {"A": "literal", "B": FromEdgeEnv(from_edge_env="MERIDIAN_SECRET_B")}
    assert resolve_env(env, {"MERIDIAN_SECRET_B": "s3"}) == {"A": "literal", "B": "s3"}
    assert missing_edge_secrets(env, {}) == ["MERIDIAN_SECRET_B"]
    with pytest.raises(MissingEdgeSecret, match="MERIDIAN_SECRET_B"):
        resolve_env(env, {})


def test_a_template_parses_references_and_its_canonical_json_holds_only_the_name() -> None:
    spec = TemplateSpec.model_validate(
        {"executor": "process", "argv": ["x"], "env": {"DB": {"from_edge_env": "MERIDIAN_SECRET_DB"}, "A": "1"}}
    )
    assert spec.env["DB"] == FromEdgeEnv(from_edge_env="MERIDIAN_SECRET_DB")
    assert spec.model_dump(mode="json")["env"] == {"DB": {"from_edge_env": "MERIDIAN_SECRET_DB"}, "A": "1"}


@pytest.mark.parametrize(
    "value", [{"from_edge_env": "BAD-NAME"}, {"from_edge_env": "X", "extra": 1}, {"from_edge_env": "X\x00"}, {}]
)
def test_malformed_references_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        TemplateSpec.model_validate({"executor": "process", "argv": ["x"], "env": {"DB": value}})
