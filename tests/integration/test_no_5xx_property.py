"""Property: no input yields a 5xx. Bodies are generated from the request models themselves (every
field of each model given hostile JSON: NUL, line separators, lone surrogates, integers beyond 64
bits, nested junk, wrong types, URLs with credentials) and sent to a live control plane over
loopback, by an admin token (which reaches every code path) and by a confined client token.

The one 5xx allowed is `503 no_capacity` (documented: no region can take the backend), which a
fuzzed pinned region legitimately yields; anything else at 500 or above fails the property."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sync.models import (
    ConnectRequest,
    HeartbeatIn,
    RegionIn,
    RevokeRequest,
    StatusReport,
    TemplateSpec,
    TerminateRequest,
    TokenIn,
)
from tests.conftest import ADMIN_TOKEN
from tests.live_control import live_control

HOSTILE_TEXT = ["\x00", "a\x00b", "\u2028", "\u2029", "\x85", "\r\n", "\ud800", "http://u:p@h", "é" * 300, ""]
HUGE = [2**63, 2**63 - 1, -(2**63) - 1, 2**70, -(2**70), 2**31, 0, -1]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)

# Where each request model is sent.
TARGETS: list[tuple[str, str, type[BaseModel]]] = [
    ("POST", "/v1/connect", ConnectRequest),
    ("PUT", "/v1/regions/fuzz", RegionIn),
    ("PUT", "/v1/templates/fuzz", TemplateSpec),
    ("POST", "/v1/nodes/heartbeat", HeartbeatIn),
    ("POST", "/v1/tokens", TokenIn),
    ("POST", "/v1/backends/bk-fuzz/revoke", RevokeRequest),
    ("POST", "/v1/backends/bk-fuzz/terminate", TerminateRequest),
    ("POST", "/v1/backends/bk-fuzz/status", StatusReport),
]


def bodies(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the model's fields, each with any JSON value; sometimes an unknown field too."""
    fields = {name: json_values for name in model.model_fields}
    return st.fixed_dictionaries({}, optional={**fields, "surprise": json_values})


requests = st.one_of(*(st.tuples(st.just(method), st.just(path), bodies(model)) for method, path, model in TARGETS))
queries = st.one_of(
    st.tuples(st.just("/v1/sync/changes"), st.fixed_dictionaries({"since": st.sampled_from(HUGE) | st.integers()})),
    st.tuples(
        st.just("/v1/backends"),
        st.fixed_dictionaries(
            {},
            optional={
                "key": st.sampled_from([t for t in HOSTILE_TEXT if t != "\ud800"]),
                "limit": st.sampled_from(HUGE),
            },
        ),
    ),
)


@pytest.fixture(scope="module")
def live(pg_admin_url: str) -> Iterator[tuple[httpx.Client, list[str]]]:
    with live_control(pg_admin_url) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        client = http.post("/v1/tokens", json={"name": "c", "scopes": ["client"], "key_prefix": "t/"}, headers=auth)
        yield http, [ADMIN_TOKEN, client.json()["token"]]


def _allowed(r: httpx.Response) -> bool:
    if r.status_code < 500:
        return True
    return r.status_code == 503 and r.json().get("error", {}).get("code") == "no_capacity"


@pytest.mark.timeout(900)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests, as_client=st.booleans())
def test_no_generated_body_yields_a_5xx(
    live: tuple[httpx.Client, list[str]], request: tuple[str, str, dict[str, Any]], as_client: bool
) -> None:
    http, tokens = live
    method, path, body = request
    headers = {"Authorization": f"Bearer {tokens[as_client]}", "Content-Type": "application/json"}
    raw = httpx.Request(method, "http://x", json=body).content if _encodable(body) else _raw_json(body)
    r = http.request(method, path, content=raw, headers=headers)
    assert _allowed(r), (method, path, body, r.status_code, r.text)
    assert "Traceback" not in r.text


@pytest.mark.timeout(600)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries)
def test_no_generated_query_yields_a_5xx(
    live: tuple[httpx.Client, list[str]], query: tuple[str, dict[str, Any]]
) -> None:
    http, tokens = live
    path, params = query
    r = http.get(path, params=params, headers={"Authorization": f"Bearer {tokens[0]}"})
    assert _allowed(r), (path, params, r.status_code, r.text)


def _encodable(body: object) -> bool:
    try:
        httpx.Request("POST", "http://x", json=body)
    except (UnicodeEncodeError, ValueError):
        return False
    return True


def _raw_json(body: object) -> bytes:
    """JSON with lone surrogates written as `\\udXXX` escapes: valid JSON that is not valid UTF-8 text."""
    import json

    return json.dumps(body, ensure_ascii=True).encode()
