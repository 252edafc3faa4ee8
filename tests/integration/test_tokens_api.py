"""Scoped API tokens at the control plane: minting within one's own bounds, listing and deleting
one's own, expiry, and a delete that takes every token minted under the deleted one with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import RunningControl


async def _mint(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/v1/tokens", json={"name": "t", "scopes": ["client"], **body})


async def test_a_confined_token_shows_its_confinement_and_never_its_secret_again(admin: httpx.AsyncClient) -> None:
    r = await _mint(admin, key_prefix="acme/", user="alice", templates=["demo"])
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["token"].startswith("mrd_")
    assert (made["key_prefix"], made["user"], made["templates"]) == ("acme/", "alice", ["demo"])
    listed = {t["id"]: t for t in (await admin.get("/v1/tokens")).json()}
    assert made["id"] in listed and "token" not in listed[made["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["admin"], "key_prefix": "acme/"}, "body"),
        ({"scopes": ["client", "edge"], "user": "alice"}, "body"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no time zone
        ({"key_prefix": "acme\x00"}, "key_prefix"),
        ({"templates": ["Not A Name"]}, "templates.0"),
        ({"templates": []}, "templates"),
    ],
)
async def test_bad_token_bodies_are_400_with_their_field(
    admin: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await _mint(admin, **body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["fields"], r.json()


async def test_a_minted_token_stays_within_its_minter(control: RunningControl, admin: httpx.AsyncClient) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    parent = await _mint(admin, key_prefix="acme/", user="alice", templates=["demo"], expires_at=soon.isoformat())
    async with control.client(parent.json()["token"]) as p:
        refusals: list[tuple[dict[str, object], str]] = [
            ({"key_prefix": "other/"}, "key_prefix"),
            ({"user": "bob"}, "user"),
            ({"templates": ["demo", "other"]}, "templates"),
            ({"scopes": ["edge"]}, "scopes"),
            ({"expires_at": (soon + timedelta(hours=1)).isoformat()}, "expires_at"),
        ]
        for body, field in refusals:
            r = await _mint(p, **body)
            assert r.status_code == 403 and field in r.json()["error"]["fields"], (body, r.text)
        child = (await _mint(p, key_prefix="acme/team-1/")).json()
    assert child["key_prefix"] == "acme/team-1/" and child["user"] == "alice" and child["templates"] == ["demo"]
    assert datetime.fromisoformat(child["expires_at"]) == soon


async def test_deleting_a_token_revokes_what_was_minted_under_it(
    control: RunningControl, admin: httpx.AsyncClient
) -> None:
    parent = (await _mint(admin, key_prefix="acme/")).json()
    async with control.client(parent["token"]) as p:
        child = (await _mint(p, name="child")).json()
        async with control.client(child["token"]) as c:
            grandchild = (await _mint(c, name="grandchild")).json()
            assert {t["id"] for t in (await c.get("/v1/tokens")).json()} == {child["id"], grandchild["id"]}
        assert {t["id"] for t in (await p.get("/v1/tokens")).json()} == {parent["id"], child["id"], grandchild["id"]}
    r = await admin.delete(f"/v1/tokens/{parent['id']}")
    assert r.status_code == 200 and r.json()["revoked_at"], r.text
    for t in (parent, child, grandchild):
        async with control.client(t["token"]) as gone:
            assert (await gone.get("/v1/tokens")).status_code == 401
    assert (await admin.delete("/v1/tokens/tk-0000000000000000")).status_code == 404


async def test_a_client_cannot_see_or_delete_anothers_token(control: RunningControl, admin: httpx.AsyncClient) -> None:
    a = (await _mint(admin, key_prefix="a/")).json()
    b = (await _mint(admin, key_prefix="b/")).json()
    async with control.client(a["token"]) as ca:
        assert b["id"] not in {t["id"] for t in (await ca.get("/v1/tokens")).json()}
        r = await ca.delete(f"/v1/tokens/{b['id']}")
        assert r.status_code == 404 and b["id"] in r.text  # it names only the id it was given
    async with control.client(b["token"]) as cb:
        assert (await cb.get("/v1/tokens")).status_code == 200


async def test_an_expired_token_is_refused(control: RunningControl, admin: httpx.AsyncClient) -> None:
    made = (await _mint(admin, expires_at=(datetime.now(UTC) + timedelta(minutes=5)).isoformat())).json()
    async with control.client(made["token"]) as c:
        assert (await c.get("/v1/tokens")).status_code == 200
        async with control.state.pool.acquire() as conn:  # expire it now rather than sleep
            await conn.execute("UPDATE api_tokens SET expires_at = now() WHERE id = $1", made["id"])
        control.state.tokens.clear()
        assert (await c.get("/v1/tokens")).status_code == 401
