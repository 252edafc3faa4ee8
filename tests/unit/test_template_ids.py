"""Template ids are content addresses of what a template sets, not of every field the model has."""

from __future__ import annotations

import sys

from control.services.templates import template_id
from sync.canonical import content_id
from sync.models import TemplateSpec

ARGV = [sys.executable, "-m", "meridian.demo"]


def test_the_id_covers_only_what_the_template_sets() -> None:
    # A field added to TemplateSpec later, with a default, must leave existing templates' ids alone.
    assert template_id(TemplateSpec(executor="process", argv=ARGV)) == content_id(
        "tp", {"executor": "process", "argv": ARGV}
    )


def test_a_default_spelled_out_is_the_same_template_and_a_changed_value_is_not() -> None:
    plain = TemplateSpec(executor="process", argv=ARGV)
    spelled = TemplateSpec.model_validate({"executor": "process", "argv": ARGV, "warm_pool": 0})
    assert template_id(spelled) == template_id(plain)
    pooled = TemplateSpec.model_validate({"executor": "process", "argv": ARGV, "warm_pool": 2, "claim_path": "/c"})
    assert template_id(pooled) != template_id(plain)
