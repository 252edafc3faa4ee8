"""The one forwarding policy, attacked: absolute-form targets, control characters meant for a
header, forged forwarding headers — and the same request through every proxy path reaching the
backend the same way."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from edge import keys
from edge.access import active_signing_key
from edge.app import EdgeServer
from sync import tokens
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

SLOW_START = {**ECHO, "env": {"START_DELAY_S": "1.5"}}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def two_edges(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[list[EdgeServer]]:
    async with running_edges(
        control, edge_token, tmp_path, ["eu-west", "us-east"], {"echo": ECHO, "slow": SLOW_START}
    ) as edges:
        yield edges


@pytest.fixture
async def one_edge(control: RunningControl, edge_token: str, tmp_path: Path) -> AsyncIterator[EdgeServer]:
    async with running_edges(control, edge_token, tmp_path, ["eu-west"], {"echo": ECHO}) as edges:
        yield edges[0]


class _Listener:
    """A server the attacker would like the edge to dial: it counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Listener:
        async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _token_path(answer: dict[str, Any]) -> str:
    return "/" + str(answer["token"])


@pytest.mark.parametrize("via", ["fast", "full"])
async def test_absolute_form_target_never_dials_the_host_it_names(one_edge: EdgeServer, via: str) -> None:
    answer = await connect(one_edge, f"absolute-{via}")
    await wait_ready(answer)
    async with _Listener() as evil:
        conn = await RawConnection.open(one_edge.port)
        try:
            if via == "full":  # the aiohttp application owns the connection after an API request
                await conn.send(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
                assert (await conn.response()).status == 200
            target = f"http://127.0.0.1:{evil.port}{_token_path(answer)}/x?q=1"
            await conn.send(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{evil.port}\r\n\r\n".encode())
            response = await conn.response()
        finally:
            await conn.close()
        assert evil.connections == 0, "the edge dialled the host of an absolute-form target"
        assert response.body != b"forged"
        if response.status == 200:
            seen = json.loads(response.body)
            assert seen["path"] == "/x?q=1"
            assert _header(seen, "x-meridian-secret") is not None
        else:
            assert response.status == 400


async def test_asterisk_and_authority_targets_are_refused(one_edge: EdgeServer) -> None:
    for target in (b"*", b"127.0.0.1:1"):
        conn = await RawConnection.open(one_edge.port)
        try:
            await conn.send(b"OPTIONS " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await conn.response()
        finally:
            await conn.close()
        assert 400 <= response.status < 500


@pytest.mark.parametrize("bad", ["a\r\nx-injected: 1", "a\nb", "a\x00b", "a\rb"])
async def test_control_characters_in_user_are_400_at_edge_and_control_connect(
    one_edge: EdgeServer, control: RunningControl, bad: str
) -> None:
    async with httpx.AsyncClient(headers=AUTH, timeout=10) as c:
        for base in (edge_url(one_edge), control.url):
            r = await c.post(f"{base}/v1/connect", json={"key": "ctl", "template": "echo", "user": bad})
            assert r.status_code == 400, (base, r.text)
            assert r.json()["error"]["code"] == "bad_request"
            assert bad not in r.text


@pytest.mark.parametrize("via", ["fast", "full"])
async def test_a_token_whose_user_has_crlf_never_becomes_a_header(one_edge: EdgeServer, via: str) -> None:
    """A signed token carrying CR/LF (issued before validation existed, or by a buggy issuer): the
    proxy refuses to emit the header, so no second request is smuggled to the backend."""
    answer = await connect(one_edge, f"smuggle-{via}")
    await wait_ready(answer)
    replica = one_edge.app[keys.REPLICA]
    key = active_signing_key(replica)
    assert key is not None
    now = int(time.time())
    smuggled = "eve\r\nContent-Length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x"
    token = tokens.sign(tokens.ConnectionClaims(answer["backend_id"], smuggled, now + 600, now), key.id, key.secret)
    conn = await RawConnection.open(one_edge.port)
    try:
        if via == "full":
            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
            assert (await conn.response()).status == 200
        await conn.send(f"GET /{token}/first HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
        response = await conn.response()
    finally:
        await conn.close()
    assert response.status == 400
    assert json.loads(response.body)["error"]["code"] == "bad_request"


def _header(seen: dict[str, Any], name: str) -> str | None:
    values = [v for n, v in seen["headers"] if n.lower() == name]
    assert len(values) <= 1, f"{name} sent {len(values)} times"
    return values[0] if values else None


_PER_CONNECTION = {"connection", "upgrade", "content-length", "transfer-encoding"}


def _comparable(seen: dict[str, Any], drop: Collection[str] = frozenset()) -> dict[str, str]:
    out = {}
    for name, value in seen["headers"]:
        lower = name.lower()
        if lower in _PER_CONNECTION or lower.startswith("sec-websocket-") or lower in drop:
            continue
        assert lower not in out, f"{lower} sent twice"
        out[lower] = value
    return out


CLIENT_HEADERS = {
    "Host": "app.example:8080",
    "User-Agent": "meridian-test/1",
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Host": "forged.example",
    "X-Forwarded-Proto": "https",
    "x-meridian-user": "mallory",
    "x-meridian-secret": "forged",
    "x-meridian-hop": "forged",
    "Cookie": "a=b; meridian_token=should-not-pass",
    "X-App": "kept",
}


async def _get(url: str, headers: dict[str, str], session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def test_the_same_request_through_every_path_reaches_the_backend_the_same(
    two_edges: list[EdgeServer],
) -> None:
    local, other = two_edges
    answer = await connect(local, "every-path")
    remote = await connect(local, "every-path-remote", region="us-east")
    await wait_ready(answer)
    await wait_ready(remote)
    token = answer["token"]
    base = edge_url(local)
    seen: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession(skip_auto_headers=("Accept", "Accept-Encoding")) as s:
        seen["fast"] = await _get(f"{base}/{token}/probe?x=1", CLIENT_HEADERS, s)
        # the aiohttp application: a connection it owns (after an API request on it)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), skip_auto_headers=("Accept", "Accept-Encoding")
        ) as one:
            async with one.get(f"{base}/healthz") as r:
                assert r.status == 200
            seen["full"] = await _get(f"{base}/{token}/probe?x=1", CLIENT_HEADERS, one)
        sub_headers = {**CLIENT_HEADERS, "Host": f"{answer['backend_id']}.{EDGE_DOMAIN}"}
        sub_headers["Cookie"] = f"a=b; meridian_token={token}"
        seen["subdomain"] = await _get(f"{base}/probe?x=1", sub_headers, s)
        seen["base-path"] = await _get(
            f"{base}/{answer['backend_id']}/probe?x=1",
            {**CLIENT_HEADERS, "Cookie": f"a=b; meridian_token={token}"},
            s,
        )
        async with s.ws_connect(f"{base}/{token}/probe/ws?x=1", headers=CLIENT_HEADERS) as ws:
            seen["websocket"] = json.loads((await ws.receive(timeout=10)).data)
        slow = await connect(local, "every-path-slow", template="slow")
        seen["waiting"] = await _get(f"{base}/{slow['token']}/probe?x=1", CLIENT_HEADERS, s)
        # a backend on the other edge: forwarded from this one, compared with asking that edge directly
        remote_forwarded = await _get(f"{base}/{remote['token']}/probe?x=1", CLIENT_HEADERS, s)
        remote_direct = await _get(f"{edge_url(other)}/{remote['token']}/probe?x=1", CLIENT_HEADERS, s)
        remote_by_base = await _get(
            f"{base}/{remote['backend_id']}/probe?x=1",
            {**CLIENT_HEADERS, "Cookie": f"a=b; meridian_token={remote['token']}"},
            s,
        )

    reference = _comparable(seen["fast"])
    assert reference["host"] == "app.example:8080"
    assert reference["x-forwarded-for"] == "127.0.0.1"
    assert reference["x-forwarded-host"] == "app.example:8080"
    assert reference["x-forwarded-proto"] == "http"
    assert reference["x-forwarded-prefix"] == f"/{answer['backend_id']}"
    assert reference["cookie"] == "a=b"
    assert reference["x-app"] == "kept" and reference["user-agent"] == "meridian-test/1"
    assert "x-meridian-user" not in reference and "x-meridian-hop" not in reference
    assert reference["x-meridian-secret"] != "forged"
    assert "accept-encoding" not in reference and "expect" not in reference
    assert seen["fast"]["path"] == "/probe?x=1"
    for path in ("full", "base-path", "websocket"):
        assert _comparable(seen[path]) == reference, path
    assert seen["full"]["path"] == seen["base-path"]["path"] == "/probe?x=1"
    assert seen["websocket"]["path"] == "/probe/ws?x=1"

    def anonymous(s: dict[str, Any], drop: frozenset[str] = frozenset()) -> dict[str, str]:
        """Headers that name the backend differ between backends by design."""
        return _comparable(
            s, {"x-meridian-backend", "x-meridian-secret", "x-forwarded-prefix", "x-meridian-region"} | drop
        )

    assert anonymous(seen["waiting"]) == anonymous(seen["fast"])
    assert _comparable(remote_forwarded) == _comparable(remote_direct)
    assert _comparable(remote_by_base) == _comparable(remote_direct)
    assert anonymous(remote_forwarded) == anonymous(seen["fast"])
    assert _header(remote_forwarded, "x-meridian-region") == "us-east"
    sub = seen["subdomain"]
    assert _header(sub, "host") == f"{answer['backend_id']}.{EDGE_DOMAIN}"
    assert _header(sub, "x-forwarded-prefix") is None
    assert _comparable(sub, {"host", "x-forwarded-host"}) == _comparable(
        seen["fast"], {"host", "x-forwarded-host", "x-forwarded-prefix"}
    )


async def test_x_forwarded_headers_of_a_trusted_proxy_are_appended_to(
    control: RunningControl, edge_token: str, tmp_path: Path
) -> None:
    async with running_edges(
        control, edge_token, tmp_path, ["eu-west"], {"echo": ECHO}, trusted_proxies=["127.0.0.1"]
    ) as (edge,):
        answer = await connect(edge, "trusted")
        async with aiohttp.ClientSession() as s:
            seen = await _get(answer["url"] + "p", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}, s)
    assert _header(seen, "x-forwarded-for") == "203.0.113.9, 127.0.0.1"
    assert _header(seen, "x-forwarded-proto") == "https"
