"""End to end on a 3-region dev cluster: every component a real process, traffic on loopback."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from meridian.dev import DevCluster
from sync import tokens
from tests.e2e.dev_api import AUTH, connect, wait_for


def _put_template(cluster: DevCluster, name: str, spec: dict[str, Any]) -> None:
    r = httpx.put(f"{cluster.control_url}/v1/templates/{name}", json=spec, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text


def _backend(cluster: DevCluster, backend_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{cluster.control_url}/v1/backends/{backend_id}", headers=AUTH, timeout=10).json()
    return body


def _wait_terminated(cluster: DevCluster, backend_id: str, timeout_s: float, what: str) -> dict[str, Any]:
    """The backend as the control plane records it once terminated."""

    def terminated() -> dict[str, Any] | None:
        b = _backend(cluster, backend_id)
        return b if b["status"] == "terminated" else None

    return wait_for(terminated, timeout_s, what)


def test_connect_then_the_url_serves_the_page_of_the_right_backend(cluster: DevCluster) -> None:
    answer = connect(cluster, 0, key="e2e-page")
    page = httpx.get(answer["url"], timeout=30)
    assert page.status_code == 200 and answer["backend_id"] in page.text and "e2e-page" in page.text
    info = httpx.get(answer["url"] + "info", timeout=10).json()
    assert info["backend_id"] == answer["backend_id"] and info["key"] == "e2e-page"
    assert info["region"] == answer["region"] and info["fencing_token"] == answer["fencing_token"]
    assert info["proxied"] is True, "the edge must present MERIDIAN_SECRET to the backend"
    assert _backend(cluster, answer["backend_id"])["status"] == "ready"


def test_same_key_through_every_edge_is_the_same_backend_and_pages_agree(cluster: DevCluster) -> None:
    first = connect(cluster, 0, key="e2e-same")
    httpx.get(first["url"] + "info", timeout=30)  # wait until ready
    answers = [connect(cluster, i, key="e2e-same") for i in range(3)]
    assert {a["backend_id"] for a in answers} == {first["backend_id"]}
    # an edge of another region forwards the request to the owning edge rather than spawning
    other = answers[2]["url"].replace(cluster.edge_url(0), cluster.edge_url(2))
    assert httpx.get(other + "info", timeout=10).json()["backend_id"] == first["backend_id"]


async def test_200_concurrent_connects_of_a_new_key_through_different_edges_make_one_backend(
    cluster: DevCluster,
) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def one(i: int) -> dict[str, Any]:
            url = f"{cluster.edge_url(i % 3)}/v1/connect"
            async with session.post(url, json={"key": "e2e-herd", "template": "demo"}) as r:
                assert r.status == 200, await r.text()
                answer: dict[str, Any] = await r.json()
                return answer

        answers = await asyncio.gather(*(one(i) for i in range(200)))
    assert len({a["backend_id"] for a in answers}) == 1
    assert sum(a["spawned"] for a in answers) == 1


async def test_websocket_echo_through_the_proxy(cluster: DevCluster) -> None:
    answer = connect(cluster, 1, key="e2e-ws")
    ws_url = answer["url"].replace("http://", "ws://") + "ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await ws.receive(timeout=10)).data == b"\x00\x01binary"


def test_streaming_post_body_round_trips(cluster: DevCluster) -> None:
    answer = connect(cluster, 0, key="e2e-echo")

    def chunks() -> Iterator[bytes]:
        for i in range(64):
            yield bytes([i]) * 32768

    r = httpx.post(answer["url"] + "echo", content=chunks(), timeout=30)
    assert r.status_code == 200 and r.content == b"".join(chunks())


def test_idle_shutdown_frees_the_key_and_the_next_backend_gets_a_greater_fencing_token(cluster: DevCluster) -> None:
    _put_template(
        cluster, "quick", {"executor": "process", "argv": [sys.executable, "-m", "meridian.demo"], "idle_timeout_s": 1}
    )
    first = connect(cluster, 0, key="e2e-idle", template="quick")
    assert httpx.get(first["url"] + "info", timeout=30).status_code == 200
    gone = _wait_terminated(cluster, first["backend_id"], 20, "the idle backend to be terminated")
    assert gone["termination_reason"] == "idle"
    assert httpx.get(first["url"] + "info", timeout=10).status_code == 410
    second = connect(cluster, 0, key="e2e-idle", template="quick")
    assert second["backend_id"] != first["backend_id"] and second["spawned"] is True
    assert second["fencing_token"] > first["fencing_token"]


# ---- bad input and faults ------------------------------------------------------------------------


def _signing_key(cluster: DevCluster) -> dict[str, Any]:
    with httpx.stream("GET", f"{cluster.control_url}/v1/sync/snapshot", headers=AUTH, timeout=30) as r:
        for line in r.iter_lines():
            obj = json.loads(line)
            if obj.get("kind") == "signing_key" and not obj["body"].get("retired_at"):
                key: dict[str, Any] = obj["body"]
                return key
    raise AssertionError("no signing key in the snapshot")


def _refused(url: str) -> bool:
    return httpx.get(url, timeout=5).status_code == 401


def test_forged_expired_and_malformed_tokens_are_401(cluster: DevCluster) -> None:
    answer = connect(cluster, 0, key="e2e-tokens")
    edge = cluster.edge_url(0)
    key = _signing_key(cluster)
    now = int(time.time())
    expired = tokens.sign(
        tokens.ConnectionClaims(answer["backend_id"], None, now - 10, now - 100), key["id"], key["secret"]
    )
    forged = tokens.sign(
        tokens.ConnectionClaims(answer["backend_id"], None, now + 100, now), key["id"], tokens.new_signing_secret()
    )
    for bad, why in ((expired, "expired"), (forged, "invalid"), ("not-a-token", "invalid"), ("v1.x.y.z", "invalid")):
        r = httpx.get(f"{edge}/{bad}/info", timeout=10)
        assert r.status_code == 401, (why, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert why in r.json()["error"]["message"]
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc/passwd"):
        r = httpx.get(edge + path, timeout=10)
        assert r.status_code in (401, 404) and "root:" not in r.text, path


def test_revoked_token_stops_working_at_every_edge_within_a_second(cluster: DevCluster) -> None:
    answer = connect(cluster, 0, key="e2e-revoke", user="ada")
    token = answer["token"]
    assert httpx.get(answer["url"] + "info", timeout=30).status_code == 200
    r = httpx.post(
        f"{cluster.control_url}/v1/backends/{answer['backend_id']}/revoke",
        json={"user": "ada"},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    for i in range(3):
        wait_for(
            functools.partial(_refused, f"{cluster.edge_url(i)}/{token}/info"),
            1.0,
            f"edge {i} to refuse the revoked token",
        )
    assert time.monotonic() - revoked_at < 1.5
    fresh = connect(cluster, 0, key="e2e-revoke", user="bob")
    assert httpx.get(fresh["url"] + "info", timeout=10).status_code == 200, "other users' tokens still work"


def test_client_sent_meridian_headers_are_stripped(cluster: DevCluster) -> None:
    answer = connect(cluster, 0, key="e2e-headers")
    r = httpx.get(
        answer["url"] + "info",
        timeout=30,
        headers={"x-meridian-user": "admin", "x-meridian-secret": "guess", "X-Meridian-Backend": "bk-x"},
    )
    info = r.json()
    assert "x-meridian-user" not in info["headers_seen"]  # the token names no user
    assert info["backend_id"] == answer["backend_id"] and info["proxied"] is True


def test_oversized_body_is_413_and_the_edge_keeps_serving(cluster: DevCluster) -> None:
    answer = connect(cluster, 0, key="e2e-big")
    r = httpx.post(answer["url"] + "echo", content=b"x" * (11 << 20), timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(11 * 16):
            yield b"z" * 65536

    try:
        r = httpx.post(answer["url"] + "echo", content=chunks(), timeout=30)
        assert r.status_code == 413
    except httpx.TransportError:
        pass  # the edge may close the connection before the client has finished sending
    r = httpx.post(
        f"{cluster.edge_url(0)}/v1/connect", content=b"{" + b" " * (2 << 20) + b"}", headers=AUTH, timeout=30
    )
    assert r.status_code == 413
    assert httpx.get(answer["url"] + "info", timeout=10).status_code == 200


def test_bad_connect_bodies_at_the_edge(cluster: DevCluster) -> None:
    edge = cluster.edge_url(1)
    for body, status in (
        ({"template": "demo", "bogus": 1}, 400),
        ({"template": "demo", "key": "a\nb"}, 400),
        ({"template": "nope"}, 422),
    ):
        r = httpx.post(f"{edge}/v1/connect", json=body, headers=AUTH, timeout=10)
        assert r.status_code == status, r.text
        assert "error" in r.json()
    assert httpx.post(f"{edge}/v1/connect", json={"template": "demo"}, timeout=10).status_code == 401
    r = httpx.post(
        f"{edge}/v1/connect", json={"template": "demo"}, headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert r.status_code == 401


def test_backend_that_crashes_at_start_is_failed_with_its_exit_code(cluster: DevCluster) -> None:
    _put_template(cluster, "crash", {"executor": "process", "argv": [sys.executable, "-c", "import sys; sys.exit(3)"]})
    answer = connect(cluster, 0, key="e2e-crash", template="crash")
    r = httpx.get(answer["url"], timeout=30)
    assert r.status_code == 410 and r.json()["error"]["code"] == "backend_gone"
    b = _wait_terminated(cluster, answer["backend_id"], 10, "the crashed backend to be reported")
    assert b["termination_reason"] == "failed" and b["exit_code"] == 3


def test_backend_that_never_gets_ready_is_failed_after_its_start_timeout(cluster: DevCluster) -> None:
    _put_template(
        cluster,
        "mute",
        {"executor": "process", "start_timeout_s": 1, "argv": [sys.executable, "-c", "import time; time.sleep(60)"]},
    )
    answer = connect(cluster, 1, key="e2e-mute", template="mute")
    b = _wait_terminated(cluster, answer["backend_id"], 15, "the never-ready backend to be failed")
    assert b["termination_reason"] == "failed"


def test_backend_ignoring_sigterm_is_killed_and_a_dead_port_gives_502_or_410(cluster: DevCluster) -> None:
    stubborn = (
        "import os, signal, http.server\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()\n"
    )
    _put_template(cluster, "stubborn", {"executor": "process", "argv": [sys.executable, "-c", stubborn]})
    answer = connect(cluster, 2, key="e2e-stubborn", template="stubborn")
    assert httpx.get(answer["url"], timeout=30).status_code == 200
    r = httpx.post(f"{cluster.control_url}/v1/backends/{answer['backend_id']}/terminate", json={}, headers=AUTH)
    assert r.json()["status"] == "draining"
    b = _wait_terminated(cluster, answer["backend_id"], 20, "the stubborn backend to be killed after the grace period")
    assert b["termination_reason"] == "requested"

    victim = connect(cluster, 2, key="e2e-victim")
    bystander = connect(cluster, 2, key="e2e-bystander")
    pid = httpx.get(victim["url"] + "info", timeout=30).json()["pid"]
    os.kill(pid, signal.SIGKILL)
    r = httpx.get(victim["url"] + "info", timeout=30)
    assert r.status_code in (410, 502), r.text
    assert httpx.get(bystander["url"] + "info", timeout=10).status_code == 200, "the edge keeps serving others"
    b = _wait_terminated(cluster, victim["backend_id"], 10, "the killed backend to be reported")
    assert b["termination_reason"] == "failed"


def test_edge_status_reports_sync_and_backends(cluster: DevCluster) -> None:
    status = httpx.get(f"{cluster.edge_url(0)}/v1/edge/status", timeout=10).json()
    assert status["region"] == "eu-west" and status["control_plane"] == "reachable"
    version = httpx.get(f"{cluster.control_url}/healthz").json()["version"]
    assert status["applied_version"] <= version and status["applied_version"] > 0
    assert status["backends_running"] >= 0 and status["node_id"].startswith("nd-")


@pytest.mark.parametrize("edge", [0, 1, 2])
def test_edges_are_healthy_and_converged(cluster: DevCluster, edge: int) -> None:
    version = httpx.get(f"{cluster.control_url}/healthz").json()["version"]
    wait_for(
        lambda: httpx.get(f"{cluster.edge_url(edge)}/v1/edge/status").json()["applied_version"] >= version,
        5,
        "the edge to apply the current version",
    )


def test_signing_key_rotation_reaches_edges_and_old_tokens_keep_working(cluster: DevCluster) -> None:
    before = connect(cluster, 0, key="e2e-rotate")
    assert httpx.get(before["url"] + "info", timeout=30).status_code == 200
    r = httpx.post(f"{cluster.control_url}/v1/signing-keys/rotate", headers=AUTH, timeout=10)
    assert r.status_code == 200
    new_key = r.json()["id"]
    after = wait_for(
        lambda: (a := connect(cluster, 1, key="e2e-rotate"))["token"].split(".")[1] == new_key and a,
        5,
        "connect to sign with the new key",
    )
    for i in range(3):  # every edge verifies tokens of both keys from its replica
        assert httpx.get(f"{cluster.edge_url(i)}/{after['token']}/info", timeout=10).status_code == 200
        assert httpx.get(f"{cluster.edge_url(i)}/{before['token']}/info", timeout=10).status_code == 200


def test_backend_past_its_lifetime_is_stopped_even_while_in_use(cluster: DevCluster) -> None:
    _put_template(
        cluster,
        "brief",
        {
            "executor": "process",
            "argv": [sys.executable, "-m", "meridian.demo"],
            "lifetime_limit_s": 2,
            "idle_timeout_s": 3600,
        },
    )
    answer = connect(cluster, 1, key="e2e-brief", template="brief")
    assert httpx.get(answer["url"] + "info", timeout=30).status_code == 200
    gone = _wait_terminated(cluster, answer["backend_id"], 20, "the backend to reach its lifetime limit")
    assert gone["termination_reason"] == "lifetime"
