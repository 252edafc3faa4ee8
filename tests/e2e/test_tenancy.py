"""Two tenants on a 3-region dev cluster (every component a real process), each with a client token
confined to its key prefix: neither reaches, reads, terminates, revokes, lists or learns the ids of
the other's backends, through the control plane or any edge."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from meridian.dev import DevCluster
from tests.e2e.conftest import ADMIN

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
SECRET_URL = "postgres://app:hunter2-planted-secret@db.internal/app"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _mint(cluster: DevCluster, by: str, **body: object) -> httpx.Response:
    return httpx.post(f"{cluster.control_url}/v1/tokens", json={"scopes": ["client"], **body}, headers=_auth(by))


def _token(cluster: DevCluster, by: str = ADMIN, **body: object) -> dict[str, Any]:
    r = _mint(cluster, by, **body)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def _urls(cluster: DevCluster) -> list[str]:
    """The control plane and every edge: each one must enforce the same confinement."""
    return [cluster.control_url, *(cluster.edge_url(i) for i in range(len(cluster.regions)))]


def _connect(url: str, token: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/connect", json={"template": "demo", **body}, headers=_auth(token), timeout=30)


def _claims(connection_token: str) -> dict[str, Any]:
    payload = connection_token.split(".")[2]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


def _wait_edges_caught_up(cluster: DevCluster, timeout_s: float = 10) -> None:
    """Until every edge has applied the current version (so it knows the tokens just minted)."""
    version = httpx.get(f"{cluster.control_url}/healthz", timeout=5).json()["version"]
    deadline = time.monotonic() + timeout_s
    for i in range(len(cluster.regions)):
        while httpx.get(f"{cluster.edge_url(i)}/v1/edge/status", timeout=5).json()["applied_version"] < version:
            assert time.monotonic() < deadline, "edge did not catch up"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def tenants(cluster: DevCluster) -> Iterator[dict[str, str]]:
    a = _token(cluster, name="tenant a", key_prefix="tenant-a/")["token"]
    b = _token(cluster, name="tenant b", key_prefix="tenant-b/")["token"]
    _wait_edges_caught_up(cluster)
    yield {"a": a, "b": b}


def test_each_tenant_connects_only_under_its_prefix_everywhere(cluster: DevCluster, tenants: dict[str, Any]) -> None:
    for url in _urls(cluster):
        r = _connect(url, tenants["a"], key="tenant-b/doc-1")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (url, r.text)
        assert "bk-" not in r.text
        r = _connect(url, tenants["a"])  # a keyless spawn has no key under the prefix
        assert r.status_code == 403, (url, r.text)
    r = _connect(cluster.edge_url(0), tenants["a"], key="tenant-a/doc-1")
    assert r.status_code == 200, r.text
    assert httpx.get(r.json()["url"], timeout=30).status_code == 200


def test_a_tenant_cannot_read_terminate_revoke_list_or_follow_the_others_backend(
    cluster: DevCluster, tenants: dict[str, Any]
) -> None:
    theirs = _connect(cluster.edge_url(1), tenants["b"], key="tenant-b/secret-doc").json()
    mine = _connect(cluster.edge_url(1), tenants["a"], key="tenant-a/own-doc").json()
    bid = theirs["backend_id"]
    with httpx.Client(base_url=cluster.control_url, headers=_auth(tenants["a"]), timeout=10) as a:
        assert a.get(f"/v1/backends/{bid}").status_code == 404
        assert a.post(f"/v1/backends/{bid}/terminate", json={}).status_code == 404
        assert a.post(f"/v1/backends/{bid}/revoke", json={}).status_code == 404
        assert a.get(f"/v1/backends/{bid}/events").status_code == 404
        listed = a.get("/v1/backends").json()
        assert mine["backend_id"] in {b["id"] for b in listed}
        assert all(b["key"].startswith("tenant-a/") for b in listed), listed
        assert a.get("/v1/backends", params={"key": "tenant-b/secret-doc"}).json() == []
    # b's backend was neither stopped nor its tokens revoked by any of that
    assert httpx.get(theirs["url"], timeout=30).status_code == 200
    with httpx.Client(base_url=cluster.control_url, headers=_auth(tenants["b"]), timeout=10) as b:
        assert b.get(f"/v1/backends/{bid}").json()["status"] in ("starting", "ready")


def test_a_held_key_of_another_template_does_not_name_the_other_backend(cluster: DevCluster) -> None:
    spec = httpx.get(f"{cluster.control_url}/v1/templates/demo", headers=ADMIN_AUTH).json()["spec"]  # keeps running
    assert httpx.put(f"{cluster.control_url}/v1/templates/rival", json=spec, headers=ADMIN_AUTH).status_code == 200
    held = httpx.post(
        f"{cluster.control_url}/v1/connect",
        json={"key": "tenant-c/held", "template": "rival"},
        headers=ADMIN_AUTH,
        timeout=30,
    ).json()
    c = _token(cluster, name="tenant c", key_prefix="tenant-c/", templates=["demo"])["token"]
    _wait_edges_caught_up(cluster)
    for url in _urls(cluster):
        r = _connect(url, c, key="tenant-c/held")
        assert r.status_code == 409 and r.json()["error"]["code"] == "key_held", (url, r.text)
        assert held["backend_id"] not in r.text and "bk-" not in r.text and "rival" not in r.text, r.text
        r = _connect(url, c, key="tenant-c/x", template="rival")  # not one of its templates
        assert r.status_code == 403, (url, r.text)


def test_a_user_bound_token_obtains_tokens_only_for_its_user_and_mints_none_for_another(
    cluster: DevCluster,
) -> None:
    alice = _token(cluster, name="alice", key_prefix="tenant-a/", user="alice")["token"]
    _wait_edges_caught_up(cluster)
    for url in _urls(cluster):
        r = _connect(url, alice, key="tenant-a/shared", user="bob")
        assert r.status_code == 403 and "user" in r.json()["error"]["fields"], (url, r.text)
        r = _connect(url, alice, key="tenant-a/shared")
        assert r.status_code == 200, (url, r.text)
        assert _claims(r.json()["token"])["u"] == "alice"
    assert _mint(cluster, alice, name="for bob", user="bob").status_code == 403
    assert _mint(cluster, alice, name="wider", key_prefix="tenant-b/").status_code == 403
    assert _mint(cluster, alice, name="admin", scopes=["admin"]).status_code == 403
    child = _token(cluster, alice, name="child", key_prefix="tenant-a/sub/")
    assert child["user"] == "alice" and child["key_prefix"] == "tenant-a/sub/"


def test_template_argv_env_and_image_are_invisible_to_client_tokens(
    cluster: DevCluster, tenants: dict[str, Any]
) -> None:
    spec = {"executor": "process", "argv": ["python3", "-m", "secret_app"], "env": {"DATABASE_URL": SECRET_URL}}
    assert httpx.put(f"{cluster.control_url}/v1/templates/secretive", json=spec, headers=ADMIN_AUTH).status_code == 200
    with httpx.Client(base_url=cluster.control_url, headers=_auth(tenants["a"]), timeout=10) as a:
        for r in (a.get("/v1/templates"), a.get("/v1/templates/secretive")):
            assert r.status_code == 200, r.text
            assert "hunter2" not in r.text and "secret_app" not in r.text, r.text
            assert '"env"' not in r.text and '"argv"' not in r.text and '"image"' not in r.text
        one = a.get("/v1/templates/secretive").json()
        assert one["executor"] == "process" and one["id"].startswith("tp-") and "idle_timeout_s" in one["limits"]
    admin_view = httpx.get(f"{cluster.control_url}/v1/templates/secretive", headers=ADMIN_AUTH).json()
    assert admin_view["spec"]["env"]["DATABASE_URL"] == SECRET_URL


def test_a_deleted_token_is_refused_by_every_edge_within_a_second(cluster: DevCluster) -> None:
    doomed = _token(cluster, name="doomed", key_prefix="tenant-d/")
    _wait_edges_caught_up(cluster)
    for url in _urls(cluster):
        assert _connect(url, doomed["token"], key="tenant-d/doc").status_code == 200
    r = httpx.delete(f"{cluster.control_url}/v1/tokens/{doomed['id']}", headers=ADMIN_AUTH)
    assert r.status_code == 200 and r.json()["revoked_at"], r.text
    deleted_at = time.monotonic()

    def refused_after(url: str) -> float | None:
        """Seconds until this edge refused the token: each edge is watched by its own thread, so the
        figure is off by one round trip at most (not by the other edges' round trips too)."""
        with httpx.Client(headers=_auth(doomed["token"]), timeout=30) as client:
            while time.monotonic() - deleted_at < 5:
                body = {"template": "demo", "key": "tenant-d/doc"}
                if client.post(f"{url}/v1/connect", json=body).status_code == 401:
                    return time.monotonic() - deleted_at
                time.sleep(0.01)  # another process's state: nothing to await across it
        return None

    with ThreadPoolExecutor(len(_urls(cluster))) as pool:
        refused = dict(zip(_urls(cluster), pool.map(refused_after, _urls(cluster)), strict=True))
    assert None not in refused.values(), refused
    assert max(t for t in refused.values() if t is not None) < 1.0, refused


def test_tokens_expire_at_the_control_plane_and_every_edge(cluster: DevCluster) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    brief = _token(cluster, name="brief", key_prefix="tenant-e/", expires_at=soon.isoformat())
    _wait_edges_caught_up(cluster)
    assert _connect(cluster.edge_url(2), brief["token"], key="tenant-e/doc").status_code == 200
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)  # wall clock is the subject here
    for url in _urls(cluster):
        r = _connect(url, brief["token"], key="tenant-e/doc")
        assert r.status_code == 401, (url, r.text)


def test_listing_and_deleting_tokens_stays_within_ones_own(cluster: DevCluster, tenants: dict[str, Any]) -> None:
    child = _token(cluster, tenants["a"], name="a child")
    other = _token(cluster, tenants["b"], name="b child")
    listed = httpx.get(f"{cluster.control_url}/v1/tokens", headers=_auth(tenants["a"])).json()
    ids = {t["id"] for t in listed}
    assert child["id"] in ids and other["id"] not in ids
    assert all("token" not in t or t["token"] is None for t in listed)
    r = httpx.delete(f"{cluster.control_url}/v1/tokens/{other['id']}", headers=_auth(tenants["a"]))
    assert r.status_code == 404
    assert (
        httpx.delete(f"{cluster.control_url}/v1/tokens/{child['id']}", headers=_auth(tenants["a"])).status_code == 200
    )


def test_a_connect_right_after_a_revoke_gets_a_working_token(cluster: DevCluster, tenants: dict[str, Any]) -> None:
    first = _connect(cluster.edge_url(0), tenants["a"], key="tenant-a/revoked-doc").json()
    assert httpx.get(first["url"], timeout=30).status_code == 200
    r = httpx.post(f"{cluster.control_url}/v1/backends/{first['backend_id']}/revoke", json={}, headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text
    again = _connect(cluster.control_url, tenants["a"], key="tenant-a/revoked-doc").json()
    at_edge = _connect(cluster.edge_url(0), tenants["a"], key="tenant-a/revoked-doc").json()
    assert again["backend_id"] == at_edge["backend_id"] == first["backend_id"]
    _wait_edges_caught_up(cluster)
    for answer in (again, at_edge):
        assert httpx.get(answer["url"], timeout=30).status_code == 200, "a token issued after the revoke works"
    assert httpx.get(first["url"], timeout=30).status_code == 401, "the token issued before it does not"
