"""Prefixed random ids (`bk-…`, `nd-…`, `tk-…`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"
