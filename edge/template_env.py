"""A template's environment as a backend gets it: literal values as they are, and references to
edge-side secrets (`{"from_edge_env": "NAME"}`) read from this edge process's environment when the
backend starts, so the secret never lives in PostgreSQL, in a change row or in the replica.

Keep such secrets in `MERIDIAN_SECRET_*` variables on the edge: the process executor does not pass
`MERIDIAN_*` variables on to backends, so a backend gets a secret only when its template names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sync.models import FromEdgeEnv


class MissingEdgeSecret(LookupError):
    """A template names an edge environment variable this edge does not have."""


def missing_edge_secrets(env: Mapping[str, str | FromEdgeEnv], source: Mapping[str, str] | None = None) -> list[str]:
    """The edge environment variables `env` names that this edge does not have."""
    source = os.environ if source is None else source
    return sorted({v.from_edge_env for v in env.values() if isinstance(v, FromEdgeEnv)} - source.keys())


def resolve_env(env: Mapping[str, str | FromEdgeEnv], source: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if source is None else source
    out: dict[str, str] = {}
    for name, value in env.items():
        if isinstance(value, FromEdgeEnv):
            if value.from_edge_env not in source:
                raise MissingEdgeSecret(f"env {name}: this edge has no environment variable {value.from_edge_env}")
            out[name] = source[value.from_edge_env]
        else:
            out[name] = value
    return out
