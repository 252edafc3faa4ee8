"""`--control-url dns+srv://…`: the control plane found by SRV records served by a real DNS server
on 127.0.0.1, with failover to the next record when a host is dead, re-resolution on TTL expiry
and when every record failed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest

from edge import keys
from edge.app import send_heartbeat, start_edge
from edge.settings import EdgeSettings
from sync.client import SyncClient
from sync.discovery import SrvEndpoints, endpoints_for, parse_srv_url, with_failover
from sync.errors import ControlPlaneUnreachable
from sync.timing import DISCOVERY_MIN_TTL_S
from tests.conftest import ADMIN_TOKEN, RunningControl
from tests.integration.dns_zone import Zone, dns_server

SERVICE = "_meridian-control._tcp.example"


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
def zone() -> Zone:
    return Zone(a={"cp1.example": ["127.0.0.1"], "cp2.example": ["127.0.0.1"]})


@pytest.fixture
def nameserver(zone: Zone) -> Iterator[str]:
    with dns_server(zone) as address:
        yield address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_records_are_tried_by_priority_and_resolved_to_addresses(zone: Zone, nameserver: str) -> None:
    zone.srv[SERVICE] = [(20, 1, 8702, "cp2.example", 60), (10, 1, 8701, "cp1.example", 60)]
    zone.aaaa["cp2.example"] = ["::1"]
    endpoints = SrvEndpoints(SERVICE, nameservers=[nameserver])
    try:
        assert await endpoints.candidates() == [
            "http://127.0.0.1:8701",
            "http://127.0.0.1:8702",
            "http://[::1]:8702",
        ]
    finally:
        await endpoints.close()


async def test_answers_are_kept_for_their_ttl_then_resolved_again(zone: Zone, nameserver: str) -> None:
    zone.srv[SERVICE] = [(10, 1, 8701, "cp1.example", 30)]
    clock = Clock()
    endpoints = SrvEndpoints(SERVICE, nameservers=[nameserver], clock=clock)
    try:
        assert await endpoints.candidates() == ["http://127.0.0.1:8701"]
        zone.srv[SERVICE] = [(10, 1, 9999, "cp2.example", 30)]
        clock.now += 29
        assert await endpoints.candidates() == ["http://127.0.0.1:8701"]
        assert zone.asked("SRV") == 1
        clock.now += 2
        assert await endpoints.candidates() == ["http://127.0.0.1:9999"]
        assert zone.asked("SRV") == 2
    finally:
        await endpoints.close()


async def test_a_zero_ttl_is_held_for_the_minimum(zone: Zone, nameserver: str) -> None:
    zone.srv[SERVICE] = [(10, 1, 8701, "cp1.example", 0)]
    clock = Clock()
    endpoints = SrvEndpoints(SERVICE, nameservers=[nameserver], clock=clock)
    try:
        for _ in range(5):
            await endpoints.candidates()
        clock.now += DISCOVERY_MIN_TTL_S - 0.1
        await endpoints.candidates()
        assert zone.asked("SRV") == 1
    finally:
        await endpoints.close()


async def test_srv_failover_to_the_second_record_when_the_first_host_is_dead(
    control: RunningControl, zone: Zone, nameserver: str
) -> None:
    zone.srv[SERVICE] = [(10, 1, _dead_port(), "cp1.example", 60), (20, 1, _port(control.url), "cp2.example", 60)]
    async with SyncClient(SrvEndpoints(SERVICE, nameservers=[nameserver]), ADMIN_TOKEN) as client:
        reply = await client.changes(0, 0)
        assert reply.to >= 0
        assert client.base_url == control.url, "the live control plane is preferred from now on"
        await client.changes(reply.to, 0)


async def test_every_record_failed_means_resolving_again(control: RunningControl, zone: Zone, nameserver: str) -> None:
    zone.srv[SERVICE] = [(10, 1, _dead_port(), "cp1.example", 3600)]
    endpoints = SrvEndpoints(SERVICE, nameservers=[nameserver])
    try:
        async with SyncClient(endpoints, ADMIN_TOKEN) as client:
            with pytest.raises(ControlPlaneUnreachable):
                await client.changes(0, 0)
            # The operator moves the record; the long TTL does not keep the edge on the dead host.
            zone.srv[SERVICE] = [(10, 1, _port(control.url), "cp2.example", 3600)]
            assert (await client.changes(0, 0)).to >= 0
            assert zone.asked("SRV") == 2
    finally:
        await endpoints.close()


async def test_a_dns_outage_keeps_the_last_answer(zone: Zone) -> None:
    zone.srv[SERVICE] = [(10, 1, 8701, "cp1.example", 1)]
    clock = Clock()
    with dns_server(zone) as nameserver:
        endpoints = SrvEndpoints(SERVICE, nameservers=[nameserver], clock=clock)
        assert await endpoints.candidates() == ["http://127.0.0.1:8701"]
    try:
        clock.now += 3600
        async with asyncio.timeout(10):  # c-ares gives up on the silent server after its two tries
            assert await endpoints.candidates() == ["http://127.0.0.1:8701"]
    finally:
        await endpoints.close()


async def test_no_records_at_all_is_the_control_plane_unreachable(zone: Zone, nameserver: str) -> None:
    endpoints = SrvEndpoints("_nothing._tcp.example", nameservers=[nameserver])
    try:
        with pytest.raises(ControlPlaneUnreachable, match=r"_nothing\._tcp\.example"):
            await endpoints.candidates()
        zone.srv["_dead._tcp.example"] = [(10, 1, 8701, "nowhere.example", 60)]  # no address
        with pytest.raises(ControlPlaneUnreachable, match="no reachable address"):
            await SrvEndpoints("_dead._tcp.example", nameservers=[nameserver]).candidates()
    finally:
        await endpoints.close()


async def test_a_keyless_connect_is_not_sent_twice_after_a_mid_request_failure() -> None:
    """Only a request that never reached a server moves on: a spawn sent twice could spawn twice."""
    calls: list[str] = []

    class TwoHosts:
        preferred = "http://a"

        async def candidates(self) -> list[str]:
            return ["http://a", "http://b"]

        def failed(self, url: str) -> None:
            pass

        def succeeded(self, url: str) -> None:
            pass

    async def reset_mid_request(url: str) -> str:
        calls.append(url)
        raise ControlPlaneUnreachable("reset") from ConnectionResetError()

    with pytest.raises(ControlPlaneUnreachable):
        await with_failover(TwoHosts(), reset_mid_request, idempotent=False)
    assert calls == ["http://a"]
    with pytest.raises(ControlPlaneUnreachable):
        await with_failover(TwoHosts(), reset_mid_request, idempotent=True)
    assert calls == ["http://a", "http://a", "http://b"]


async def test_an_edge_syncs_heartbeats_and_forwards_connects_through_srv_failover(
    control: RunningControl, edge_token: str, zone: Zone, nameserver: str, tmp_path: Path
) -> None:
    zone.srv[SERVICE] = [(10, 1, _dead_port(), "cp1.example", 60), (20, 1, _port(control.url), "cp2.example", 60)]
    async with control.client() as admin:
        r = await admin.put("/v1/templates/demo", json={"executor": "process", "argv": ["true"]})
        assert r.status_code == 200
        version = (await admin.get("/healthz")).json()["version"]
    settings = EdgeSettings(
        region="eu-west",
        control_url=f"dns+srv://{SERVICE}.",
        dns_nameservers=[nameserver],
        token=edge_token,
        port=_dead_port(),  # free: the edge binds it
        data_dir=tmp_path / "edge",
    )
    edge = await start_edge(settings)
    try:
        await send_heartbeat(edge.app)
        await asyncio.wait_for(edge.app[keys.SYNC_LOOP].wait_applied(version), 30)
        async with control.client() as admin:
            nodes = [n["id"] for r in (await admin.get("/v1/regions")).json() for n in r["nodes"]]
        assert nodes == [edge.app[keys.NODE_ID]]
        assert edge.app[keys.CONTROL].base_url == control.url
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}") as http:
            status = (await http.get("/v1/edge/status")).json()
            assert status["control_plane"] == "reachable"
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            r = await http.post("/v1/connect", json={"key": "srv", "template": "demo"}, headers=auth)
            assert r.status_code == 200, r.text
    finally:
        await edge.stop()


@pytest.mark.parametrize(
    "url",
    [
        "dns+srv://user@_c._tcp.example",
        "dns+srv://_c._tcp.example:53",
        "dns+srv://_c._tcp.example/v1",
        "dns+srv://_c._tcp.example?scheme=ftp",
        "dns+srv://_c._tcp.example?x=1",
        "dns+srv://bad..name",
        "dns+srv://-bad.example",
        "dns+srv://" + "a" * 64 + ".example",
        "dns+srv://",
        "ftp://control.example",
        "control.example:8700",
    ],
)
def test_malformed_control_urls_are_refused_at_start(url: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        EdgeSettings(region="eu-west", control_url=url, token="t" * 20)


def test_srv_urls_name_the_service_and_scheme() -> None:
    assert parse_srv_url("dns+srv://_meridian-control._tcp.example.com.") == (
        "_meridian-control._tcp.example.com",
        "http",
    )
    assert parse_srv_url("dns+srv://_meridian-control._tcp.example.com?scheme=https")[1] == "https"


async def test_https_srv_targets_keep_their_names_for_tls(zone: Zone, nameserver: str) -> None:
    zone.srv[SERVICE] = [(10, 1, 443, "cp1.example", 60)]
    endpoints = endpoints_for(f"dns+srv://{SERVICE}?scheme=https", nameservers=[nameserver])
    assert isinstance(endpoints, SrvEndpoints)
    try:
        assert await endpoints.candidates() == ["https://cp1.example:443"]
        assert zone.asked("A") == 0
    finally:
        await endpoints.close()
