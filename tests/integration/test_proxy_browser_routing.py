"""Routing that browsers need: a stable base path per backend, redirects and cookies kept inside
it (one backend's cookies never reach another), the token handed over once to an HttpOnly
cookie (path and subdomain routing), per-template body caps, CORS on connect, internal addresses
between edges, and no token in any log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import EdgeServer
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.integration.edge_support import (
    ECHO,
    EDGE_DOMAIN,
    RawConnection,
    connect,
    edge_url,
    running_edges,
    wait_ready,
)

EDGE_CAP = 1 << 20
TEMPLATES: dict[str, dict[str, Any]] = {
    "echo": ECHO,
    "prefixed": {**ECHO, "strip_prefix": False},
    "uploads": {**ECHO, "max_body_bytes": 4 << 20},
}
ORIGIN = "https://app.example"


@pytest.fixture
async def edges(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[list[EdgeServer]]:
    async with running_edges(
        control,
        edge_token,
        tmp_path,
        ["eu-west", "us-east"],
        TEMPLATES,
        max_body_bytes=EDGE_CAP,
        cors_origins=[ORIGIN],
        public_url=None,
    ) as started:
        yield started


@pytest.fixture
async def edge(edges: list[EdgeServer]) -> EdgeServer:
    return edges[0]


async def _ready(edge: EdgeServer, key: str, **body: Any) -> dict[str, Any]:
    answer = await connect(edge, key, **body)
    await wait_ready(answer)
    return answer


def _bearer(answer: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {answer['token']}"}


def _cookies_seen(seen: dict[str, Any]) -> str:
    return next((v for n, v in seen["headers"] if n.lower() == "cookie"), "")


async def test_each_backend_has_a_stable_base_path_it_learns_from_its_environment(edge: EdgeServer) -> None:
    answer = await _ready(edge, "base")
    base = f"/{answer['backend_id']}"
    assert answer["base_path"] == base
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{edge_url(edge)}{base}/probe", headers=_bearer(answer)) as r:
            seen = await r.json()
        async with s.get(f"{edge_url(edge)}{base}/probe") as r:
            assert r.status == 401, "the base path alone opens nothing"
    assert seen["base_path_env"] == base and seen["path"] == "/probe"
    assert ("X-Forwarded-Prefix", base) in [tuple(h) for h in seen["headers"]]


async def test_a_template_that_keeps_the_prefix_sees_it_on_every_route(edge: EdgeServer) -> None:
    answer = await _ready(edge, "keep-prefix", template="prefixed")
    base = answer["base_path"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{edge_url(edge)}{base}/lab?x=1", headers=_bearer(answer)) as r:
            by_base = await r.json()
        async with s.get(answer["url"] + "lab?x=1") as r:
            by_token = await r.json()
    assert by_base["path"] == by_token["path"] == f"{base}/lab?x=1"


async def test_redirects_and_cookies_of_a_backend_stay_inside_its_prefix(edge: EdgeServer) -> None:
    answer = await _ready(edge, "rewrite")
    base = answer["base_path"]
    async with aiohttp.ClientSession() as s:
        url = f"{edge_url(edge)}{base}/redirect?to=/next"
        async with s.get(url, headers=_bearer(answer), allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == f"{base}/next"
        async with s.get(answer["url"] + "redirect?to=/next", allow_redirects=False) as r:
            assert r.headers["Location"] == f"/{answer['token']}/next", "a script keeps its token path"
        async with s.get(answer["url"] + "redirect?to=https://elsewhere.example/x", allow_redirects=False) as r:
            assert r.headers["Location"] == "https://elsewhere.example/x"
        url = f"{edge_url(edge)}{base}/set-cookie?name=sid&path=/"
        async with s.get(url, headers=_bearer(answer)) as r:
            assert r.headers["Set-Cookie"] == f"sid=1; Path={base}/"


async def test_cookies_one_backend_sets_never_reach_another_on_the_same_edge(edge: EdgeServer) -> None:
    first, second = await _ready(edge, "cookie-a"), await _ready(edge, "cookie-b")
    base = edge_url(edge)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{base}{first['base_path']}/set-cookie?name=only_a", headers=_bearer(first)) as r:
            assert r.status == 200
        async with browser.get(f"{base}{second['base_path']}/probe", headers=_bearer(second)) as r:
            to_second = await r.json()
        async with browser.get(f"{base}{first['base_path']}/probe", headers=_bearer(first)) as r:
            to_first = await r.json()
    assert "only_a" in _cookies_seen(to_first)
    assert "only_a" not in _cookies_seen(to_second)


async def test_a_browser_opening_the_token_url_gets_the_token_as_a_cookie_of_the_base_path(edge: EdgeServer) -> None:
    answer = await _ready(edge, "navigate")
    base = answer["base_path"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        navigate = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
        async with browser.get(answer["url"] + "lab?x=1", headers=navigate, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"{base}/lab?x=1"
            cookie = r.headers["Set-Cookie"]
        async with browser.get(f"{edge_url(edge)}{base}/lab?x=1", headers=navigate) as r:
            seen = await r.json()
    assert f"Path={base}" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Domain" not in cookie
    assert seen["path"] == "/lab?x=1"
    assert all(answer["token"] not in value for _, value in seen["headers"]), "the token reached the backend"


async def test_the_subdomain_url_hands_the_token_over_once_and_it_never_reaches_the_backend(
    edge: EdgeServer,
) -> None:
    answer = await _ready(edge, "subdomain")
    sub_host = f"{answer['backend_id']}.{EDGE_DOMAIN}"
    assert answer["subdomain_url"] == f"http://{sub_host}:{edge.port}/{answer['token']}/"
    host = {"Host": f"{sub_host}:{edge.port}"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{edge_url(edge)}/{answer['token']}/notebooks?x=1", headers=host, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/notebooks?x=1"
            cookie = r.headers["Set-Cookie"]
        token_cookie = cookie.split(";")[0]
        async with s.get(f"{edge_url(edge)}/notebooks?x=1", headers={**host, "Cookie": f"{token_cookie}; app=1"}) as r:
            seen = await r.json()
        async with s.get(
            f"{edge_url(edge)}/other", headers={"Host": f"bk-nobody.{EDGE_DOMAIN}", "Cookie": token_cookie}
        ) as r:
            assert r.status == 401, "the cookie of one backend opens no other"
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "domain=" not in cookie.lower(), "a host-only cookie"
    assert seen["path"] == "/notebooks?x=1" and _cookies_seen(seen) == "app=1"
    assert all(answer["token"] not in value for _, value in seen["headers"])


@pytest.mark.parametrize("first", ["control", "edge"])
async def test_the_control_planes_connect_answers_the_subdomain_url_like_the_edge(
    control: RunningControl, edges: list[EdgeServer], first: str
) -> None:
    """The control plane knows each node's edge domain from its heartbeats: its answer (for a new
    backend and for an existing one) has the same subdomain URL the edge's has, and it works."""
    edge, other = edges
    body = {"key": f"sub-{first}", "template": "echo", "region": "eu-west"}
    async with control.client() as admin:
        answers = []
        for where in (first, "edge" if first == "control" else "control"):
            if where == "control":
                r = await admin.post("/v1/connect", json=body)
                assert r.status_code == 200, r.text
                answers.append(r.json())
            else:
                answers.append(await connect(other, body["key"], region="eu-west"))
    for answer in answers:
        sub_host = f"{answer['backend_id']}.{EDGE_DOMAIN}"
        assert answer["subdomain_url"] == f"http://{sub_host}:{edge.port}/{answer['token']}/"
    await wait_ready(answers[0])
    async with aiohttp.ClientSession() as s:
        host = {"Host": f"{answers[0]['backend_id']}.{EDGE_DOMAIN}:{edge.port}"}
        async with s.get(f"{edge_url(edge)}/{answers[0]['token']}/x", headers=host, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/x"


async def test_a_heartbeat_with_a_malformed_edge_domain_is_refused(control: RunningControl, edge_token: str) -> None:
    heartbeat = {"node_id": "nd-bad-domain", "region": "eu-west", "address": "http://127.0.0.1:9", "capacity": 1}
    async with control.client(edge_token) as http:
        for domain in ("bad domain", "a..b", "-x.test", "x\r\nSet-Cookie: y"):
            r = await http.post("/v1/nodes/heartbeat", json={**heartbeat, "applied_version": 0, "edge_domain": domain})
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", (domain, r.text)


async def test_the_body_cap_is_a_setting_a_template_may_raise(edge: EdgeServer) -> None:
    plain, uploads = await _ready(edge, "cap-plain"), await _ready(edge, "cap-uploads", template="uploads")
    body = b"x" * (EDGE_CAP + (EDGE_CAP // 2))
    async with aiohttp.ClientSession() as s:
        async with s.post(plain["url"] + "upload", data=body) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"
        async with s.post(uploads["url"] + "upload", data=body) as r:
            assert r.status == 200 and (await r.json())["body_bytes"] == len(body)


async def test_cors_preflight_on_connect_follows_the_allow_list(edge: EdgeServer) -> None:
    url = f"{edge_url(edge)}/v1/connect"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with aiohttp.ClientSession() as s:
        async with s.options(url, headers={**preflight, "Origin": ORIGIN}) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
        async with s.options(url, headers={**preflight, "Origin": "https://evil.example"}) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        body = {"key": "cors", "template": "echo"}
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Origin": ORIGIN}
        async with s.post(url, json=body, headers=auth) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
        async with s.post(url, json=body, headers={**auth, "Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_edges_forward_to_each_others_internal_address_not_the_public_url(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], TEMPLATES) as (local,):
        async with running_edges(
            control, edge_token, tmp_path / "b", ["us-east"], {}, public_url="http://unreachable.invalid:9"
        ) as (other,):
            async with control.client() as admin:
                await asyncio.sleep(0)
                regions = (await admin.get("/v1/regions")).json()
            node = next(n for r in regions if r["name"] == "us-east" for n in r["nodes"])
            assert node["address"] == edge_url(other)
            answer = await connect(local, "internal", region="us-east")
            async with (
                aiohttp.ClientSession() as s,
                s.get(answer["url"].replace(answer["edge_url"], edge_url(local)) + "p") as r,
            ):
                assert r.status == 200 and (await r.json())["path"] == "/p"


async def test_no_token_in_any_log_line_and_a_client_leaving_mid_stream_is_not_an_error(
    edge: EdgeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await _ready(edge, "logs")
    token = answer["token"]
    async with aiohttp.ClientSession() as s:
        for path in ("probe", "status?code=500", "redirect?to=/x"):
            async with s.get(answer["url"] + path, allow_redirects=False) as r:
                await r.read()
    for via_full_path in (False, True):
        conn = await RawConnection.open(edge.port)
        if via_full_path:
            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            await conn.response()
        await conn.send(f"GET /{token}/sse?every=0.05&for=30 HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        await conn.reader.readuntil(b"data: tick 2")
        await conn.close()
    async with aiohttp.ClientSession() as s:  # the edge goes on serving
        async with s.get(answer["url"] + "probe") as r:
            assert r.status == 200
    for _ in range(100):  # the aiohttp path notices the gone client at its next write
        if any("ended early" in rec.getMessage() for rec in caplog.records):
            break
        await asyncio.sleep(0.05)
    assert token not in caplog.text
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors == [], [rec.getMessage() for rec in errors]
