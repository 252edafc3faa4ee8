"""Canonical JSON and content addressing (template ids)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_id(prefix: str, value: Any) -> str:
    return f"{prefix}-{hashlib.sha256(canonical_json(value)).hexdigest()}"
