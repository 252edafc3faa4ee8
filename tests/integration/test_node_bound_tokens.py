"""Node-bound edge tokens against a real PostgreSQL: one compromised edge cannot speak for another
node (heartbeat, status report, journal replay), whether it uses its own bound token or the edge
token the fleet shares; enrolment binds a token to a node once; only an admin mints a bound token."""

from __future__ import annotations

import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edge import keys
from edge.app import send_heartbeat
from sync.offline import ReplayIn, node_tag, provisional_token
from tests.conftest import RunningControl
from tests.helpers import DEMO_TEMPLATE, add_region
from tests.integration.edge_support import running_edges


def _hb(node_id: str, region: str, **extra: Any) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "region": region,
        "address": f"http://{node_id}.test:9000",
        "capacity": 10,
        "applied_version": 0,
        **extra,
    }


async def _post(base_url: str, token: str, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        return await c.post(path, json=body)


async def _enrol(admin: httpx.AsyncClient, shared: str, node_id: str, region: str) -> str:
    r = await _post(str(admin.base_url), shared, "/v1/nodes/heartbeat", _hb(node_id, region, enrol=True))
    assert r.status_code == 200, r.text
    token = r.json()["node_token"]
    assert token
    return str(token)


async def _two_enrolled_nodes(admin: httpx.AsyncClient, shared: str) -> tuple[str, str, dict[str, Any]]:
    """Node A (eu-west) and node B (us-east), each enrolled; a ready backend of B's."""
    for region in ("eu-west", "us-east"):
        await add_region(admin, region)
    token_a = await _enrol(admin, shared, "nd-a", "eu-west")
    token_b = await _enrol(admin, shared, "nd-b", "us-east")
    assert (await admin.put("/v1/templates/demo", json=DEMO_TEMPLATE)).status_code == 200
    r = await admin.post("/v1/connect", json={"key": "doc-b", "template": "demo", "region": "us-east"})
    assert r.status_code == 200, r.text
    backend = r.json()
    ready = {"id": backend["backend_id"], "status": "ready", "address": "127.0.0.1:4000"}
    r = await _post(str(admin.base_url), token_b, "/v1/nodes/heartbeat", _hb("nd-b", "us-east", backends=[ready]))
    assert r.json()["backends"][0]["accepted"], r.text
    return token_a, token_b, backend


def _refused(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "node_mismatch"


async def test_an_edge_token_of_node_a_cannot_speak_for_node_b(admin: httpx.AsyncClient, edge_token: str) -> None:
    token_a, _, backend = await _two_enrolled_nodes(admin, edge_token)
    base = str(admin.base_url)
    backend_id = backend["backend_id"]
    template_id = next(t["id"] for t in (await admin.get("/v1/templates")).json() if t["name"] == "demo")
    # Heartbeat as B: would mark B draining and its backend terminated.
    stopped = {"id": backend_id, "status": "terminated", "termination_reason": "requested"}
    as_b = _hb("nd-b", "us-east", shutting_down=True, backends=[stopped])
    _refused(await _post(base, token_a, "/v1/nodes/heartbeat", as_b))
    # A status report for B's backend.
    _refused(await _post(base, token_a, f"/v1/backends/{backend_id}/status", stopped))
    # A journal replayed as B: an "offline spawn" of B's key with a greater token would supersede it.
    spawn = {
        "id": f"bk-{secrets.token_hex(8)}",
        "key": "doc-b",
        "template_name": "demo",
        "template_id": template_id,
        "region": "us-east",
        "node_id": "nd-b",
        "fencing_token": provisional_token(backend["fencing_token"], node_tag(7, "nd-b")),
        "secret": secrets.token_urlsafe(24),
        "created_at": datetime.now(UTC).isoformat(),
    }
    _refused(await _post(base, token_a, "/v1/nodes/nd-b/journal", {"entries": [{"seq": 1, "spawn": spawn}]}))
    # Nothing moved: B's backend is ready, B is not draining, no second backend of the key.
    row = (await admin.get(f"/v1/backends/{backend_id}")).json()
    assert row["status"] == "ready"
    assert (await admin.get("/v1/nodes/nd-b/drain")).json()["draining"] is False
    assert [b["id"] for b in (await admin.get("/v1/backends", params={"key": "doc-b"})).json()] == [backend_id]
    # A's token still speaks for A.
    assert (await _post(base, token_a, "/v1/nodes/heartbeat", _hb("nd-a", "eu-west"))).status_code == 200


async def test_the_shared_edge_token_no_longer_speaks_for_an_enrolled_node(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    _, token_b, backend = await _two_enrolled_nodes(admin, edge_token)
    base = str(admin.base_url)
    _refused(await _post(base, edge_token, "/v1/nodes/heartbeat", _hb("nd-b", "us-east")))
    _refused(await _post(base, edge_token, "/v1/nodes/heartbeat", _hb("nd-b", "us-east", enrol=True)))
    _refused(await _post(base, edge_token, "/v1/nodes/nd-b/journal", {"entries": []}))
    report = {"id": backend["backend_id"], "status": "terminated", "termination_reason": "requested"}
    _refused(await _post(base, edge_token, f"/v1/backends/{backend['backend_id']}/status", report))
    # B's own token reports for its backend, and asking to enrol again changes nothing.
    r = await _post(base, token_b, f"/v1/backends/{backend['backend_id']}/status", report)
    assert r.status_code == 200, r.text
    again = await _post(base, token_b, "/v1/nodes/heartbeat", _hb("nd-b", "us-east", enrol=True))
    assert again.status_code == 200 and again.json()["node_token"] is None
    # The shared token still enrols new nodes, and reads the state (sync) as before.
    assert await _enrol(admin, edge_token, "nd-c", "eu-west")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token_b}"}) as c:
        assert (await c.get("/v1/sync/changes", params={"since": 0, "wait": 0})).status_code == 200


async def test_a_revoked_node_token_lets_the_node_enrol_again(admin: httpx.AsyncClient, edge_token: str) -> None:
    await add_region(admin, "eu-west")
    token = await _enrol(admin, edge_token, "nd-a", "eu-west")
    bound = [t for t in (await admin.get("/v1/tokens")).json() if t.get("node_id") == "nd-a"]
    assert [t["name"] for t in bound] == ["node nd-a"]
    assert (await admin.delete(f"/v1/tokens/{bound[0]['id']}")).status_code == 200
    assert (await _post(str(admin.base_url), token, "/v1/nodes/heartbeat", _hb("nd-a", "eu-west"))).status_code == 401
    assert await _enrol(admin, edge_token, "nd-a", "eu-west") != token


async def test_only_an_admin_binds_a_token_and_only_edge_tokens_are_bound(
    admin: httpx.AsyncClient, edge_token: str
) -> None:
    await add_region(admin, "eu-west")
    base = str(admin.base_url)
    r = await admin.post("/v1/tokens", json={"name": "a", "scopes": ["edge"], "node_id": "nd-a"})
    assert r.status_code == 201, r.text
    token_a = r.json()["token"]
    assert r.json()["node_id"] == "nd-a"
    assert (await _post(base, token_a, "/v1/nodes/heartbeat", _hb("nd-a", "eu-west"))).status_code == 200
    _refused(await _post(base, token_a, "/v1/nodes/heartbeat", _hb("nd-z", "eu-west")))
    r = await admin.post("/v1/tokens", json={"name": "c", "scopes": ["client"], "node_id": "nd-a"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    # Edge tokens mint nothing (bound or not), and a client token binds no token to a node.
    for token in (edge_token, token_a):
        r = await _post(base, token, "/v1/tokens", {"name": "x", "scopes": ["edge"], "node_id": "nd-z"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # (a token with both scopes may mint edge tokens, but not bound ones)
    client = await admin.post("/v1/tokens", json={"name": "c", "scopes": ["client", "edge"]})
    r = await _post(base, client.json()["token"], "/v1/tokens", {"name": "x", "scopes": ["edge"], "node_id": "nd-a"})
    assert r.status_code == 403 and r.json()["error"]["fields"] == {"node_id": "admin only"}
    # The admin token speaks for any node (operators, tests).
    assert (await admin.post("/v1/nodes/heartbeat", json=_hb("nd-a", "eu-west"))).status_code == 200


async def test_a_real_edge_enrols_once_and_keeps_its_token_across_restarts(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], {}) as [edge]:
        node_id = edge.app[keys.NODE_ID]
        stored = tmp_path / "eu-west" / "node_token"
        own = stored.read_text()
        assert own != edge_token and stat.S_IMODE(stored.stat().st_mode) == 0o600
        await send_heartbeat(edge.app)  # the edge speaks with its own token now
    async with control.client() as admin:
        bound = [t for t in (await admin.get("/v1/tokens")).json() if t.get("node_id") == node_id]
        assert len(bound) == 1
        _refused(await _post(control.url, edge_token, "/v1/nodes/heartbeat", _hb(node_id, "eu-west")))
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], {}) as [edge]:
        assert stored.read_text() == own, "a restarted edge uses the token it has"
        await edge.app[keys.CONTROL].replay(node_id, ReplayIn(entries=[]))  # raises on 403
        async with control.client() as admin:
            assert len([t for t in (await admin.get("/v1/tokens")).json() if t.get("node_id") == node_id]) == 1
