"""Reading HCL files the way operators' tools do, into plain dicts (python-hcl2), for shape tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
_PLAIN = SerializationOptions(
    explicit_blocks=False, strip_string_quotes=True, with_comments=False, preserve_heredocs=False
)


def load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return hcl2.load(f, serialization_options=_PLAIN)


def labelled(parent: dict[str, Any], kind: str, labels: int = 1) -> dict[str, dict[str, Any]]:
    """Blocks of one kind by their labels joined with dots: `resource "aws_vpc" "this"` with
    labels=2 → {"aws_vpc.this": body}; `group "edge"` → {"edge": body}."""
    found: dict[str, dict[str, Any]] = {}

    def walk(prefix: list[str], value: dict[str, Any], depth: int) -> None:
        for label, body in value.items():
            if depth == 1:
                assert ".".join([*prefix, label]) not in found, f"duplicate {kind} {label}"
                found[".".join([*prefix, label])] = body
            else:
                walk([*prefix, label], body, depth - 1)

    for item in parent.get(kind, []):
        walk([], item, labels)
    return found


def block(parent: dict[str, Any], kind: str) -> dict[str, Any]:
    """The one unlabelled block of a kind (`update { … }`)."""
    items = parent.get(kind, [])
    assert len(items) == 1, f"expected one {kind} block, found {len(items)}"
    result: dict[str, Any] = items[0]
    return result


def load_module(directory: Path) -> dict[str, list[Any]]:
    """Every `.tf` file of a Terraform module, merged by block kind (as Terraform reads them)."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, items in load(path).items():
            merged.setdefault(kind, []).extend(items)
    return merged
