"""Where the control plane is: a fixed URL, or DNS SRV records (`dns+srv://_meridian-control._tcp.example.`).

SRV records are ordered as RFC 2782 says (lowest priority first; within a priority, a random
order weighted by `weight`), each target is resolved to its A and AAAA addresses, and callers
get the resulting base URLs in that order. A URL whose host does not answer moves to the back;
once every URL has failed, or the records' TTL has passed, the name is resolved again. Lookups
go through aiodns (c-ares), never blocking the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiodns
import aiohttp
import pycares

from sync.errors import ControlPlaneUnreachable
from sync.timing import DISCOVERY_LOOKUP_TIMEOUT_S, DISCOVERY_MAX_TTL_S, DISCOVERY_MIN_TTL_S, DISCOVERY_RETRY_S

log = logging.getLogger(__name__)

SRV_SCHEME = "dns+srv"
LOOKUP_TRIES = 2
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
T = TypeVar("T")


class ControlEndpoints(Protocol):
    """Base URLs of the control plane, best first; told which ones failed and which answered."""

    async def candidates(self) -> list[str]: ...

    def failed(self, url: str) -> None: ...

    def succeeded(self, url: str) -> None: ...

    @property
    def preferred(self) -> str: ...


class StaticEndpoint:
    """One fixed URL (`http://…` or `https://…`)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def candidates(self) -> list[str]:
        return [self.url]

    def failed(self, url: str) -> None:
        pass

    def succeeded(self, url: str) -> None:
        pass

    @property
    def preferred(self) -> str:
        return self.url


@dataclass(frozen=True)
class SrvTarget:
    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Sequence[SrvTarget], rng: random.Random) -> list[SrvTarget]:
    """RFC 2782 order: by priority; within one, repeatedly pick by running weight sum (zero-weight
    records first in the running sum, so they are chosen only rarely, but can be)."""
    ordered: list[SrvTarget] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    ordered.append(group.pop(i))
                    break
    return ordered


def parse_srv_url(url: str) -> tuple[str, str]:
    """`dns+srv://NAME[?scheme=https]` → (NAME without its final dot, scheme of the control plane)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SRV_SCHEME:
        raise ValueError(f"not a {SRV_SCHEME}:// URL")
    if parts.username is not None or parts.port is not None or parts.path not in ("", "/") or parts.fragment:
        raise ValueError("a dns+srv URL names only a DNS name (no user, port, path or fragment)")
    query = urllib.parse.parse_qs(parts.query, strict_parsing=False)
    scheme = query.pop("scheme", ["http"])[-1]
    if query or scheme not in ("http", "https"):
        raise ValueError("the only dns+srv option is scheme=http or scheme=https")
    name = (parts.hostname or "").rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{parts.netloc!r} is not a DNS name")
    return name, scheme


def endpoints_for(url: str, *, nameservers: Sequence[str] | None = None) -> ControlEndpoints:
    """The endpoints a `--control-url` names. Raises ValueError for a URL of no known form."""
    if url.startswith(SRV_SCHEME + "://"):
        name, scheme = parse_srv_url(url)
        return SrvEndpoints(name, scheme=scheme, nameservers=nameservers)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"control URL must be http(s):// or {SRV_SCHEME}://, not {url!r}")
    return StaticEndpoint(url)


def _url(scheme: str, host: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://[{ip}]:{port}" if ip.version == 6 else f"{scheme}://{ip}:{port}"


class SrvEndpoints:
    """Base URLs from the SRV records of `name`, re-resolved on TTL expiry and when all failed."""

    def __init__(
        self,
        name: str,
        *,
        scheme: str = "http",
        nameservers: Sequence[str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.scheme = scheme
        self._nameservers = list(nameservers) if nameservers else None
        self._resolver: aiodns.DNSResolver | None = None
        self._rng = rng or random.Random()
        self._clock = clock
        self._urls: list[str] = []
        self._failed: set[str] = set()
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def preferred(self) -> str:
        return self._urls[0] if self._urls else f"{SRV_SCHEME}://{self.name}"

    async def candidates(self) -> list[str]:
        async with self._lock:
            if not self._urls or self._clock() >= self._expires:
                await self._refresh()
            return list(self._urls)

    def failed(self, url: str) -> None:
        if url not in self._urls:
            return
        self._urls.remove(url)
        self._urls.append(url)
        self._failed.add(url)
        if self._failed >= set(self._urls):
            self._expires = 0.0  # every record failed: ask DNS again before the next call

    def succeeded(self, url: str) -> None:
        self._failed.discard(url)

    async def _refresh(self) -> None:
        try:
            urls, ttl = await self._resolve()
        except (aiodns.error.DNSError, OSError) as exc:
            if not self._urls:
                raise ControlPlaneUnreachable(f"cannot resolve the SRV records of {self.name}: {exc}") from exc
            log.warning("SRV lookup of %s failed (%s); keeping the last answer for now", self.name, exc)
            self._expires = self._clock() + DISCOVERY_RETRY_S
            return
        if not urls:
            raise ControlPlaneUnreachable(f"the SRV records of {self.name} name no reachable address")
        self._urls, self._failed = urls, set()
        self._expires = self._clock() + min(max(ttl, DISCOVERY_MIN_TTL_S), DISCOVERY_MAX_TTL_S)

    def _dns(self) -> aiodns.DNSResolver:
        assert self._resolver is not None
        return self._resolver

    async def _resolve(self) -> tuple[list[str], float]:
        # A fresh channel per lookup: c-ares caches answers for their whole TTL (up to an hour),
        # and a lookup made because every record failed must see what DNS says now.
        self._resolver = aiodns.DNSResolver(
            nameservers=self._nameservers, timeout=DISCOVERY_LOOKUP_TIMEOUT_S, tries=LOOKUP_TRIES
        )
        try:
            return await self._resolve_with_channel()
        finally:
            await self.close()

    async def _resolve_with_channel(self) -> tuple[list[str], float]:
        answer = await self._dns().query_dns(self.name, "SRV")
        srv = [(r.ttl, r.data) for r in answer.answer if isinstance(r.data, pycares.SRVRecordData)]
        ttl = min((float(t) for t, _ in srv), default=DISCOVERY_MIN_TTL_S)
        targets = [
            SrvTarget(d.priority, d.weight, d.port, d.target.rstrip("."))
            for _, d in srv
            if d.target not in ("", ".") and 0 < d.port < 65536  # "." = not offered here
        ]
        urls: list[str] = []
        for target in order_srv(targets, self._rng):
            if self.scheme == "https":  # TLS needs the name: the HTTP client resolves it
                urls.append(_url(self.scheme, target.target, target.port))
                continue
            addresses, address_ttl = await self._addresses(target.target)
            ttl = min(ttl, address_ttl)
            urls.extend(_url(self.scheme, a, target.port) for a in addresses)
        return list(dict.fromkeys(urls)), ttl

    async def _addresses(self, host: str) -> tuple[list[str], float]:
        """A then AAAA addresses of `host` with their smallest TTL; a family without records is fine."""
        found: list[str] = []
        ttl = DISCOVERY_MAX_TTL_S
        results = await asyncio.gather(
            *(self._dns().query_dns(host, kind) for kind in ("A", "AAAA")), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, aiodns.error.DNSError):
                    raise result
                continue
            for record in result.answer:
                if isinstance(record.data, pycares.ARecordData | pycares.AAAARecordData):
                    found.append(str(record.data.addr))
                    ttl = min(ttl, float(record.ttl))
        if not found:
            log.warning("SRV target %s of %s has no A or AAAA record", host, self.name)
        return found, ttl

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def never_reached(exc: BaseException) -> bool:
    """True when a request failed before any byte reached the server (safe to send elsewhere)."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectorError | ConnectionRefusedError)


async def with_failover(
    endpoints: ControlEndpoints,
    call: Callable[[str], Awaitable[T]],
    *,
    idempotent: bool = True,
) -> T:
    """`call(base_url)` on each candidate in turn until one answers. A transport failure
    (ControlPlaneUnreachable) moves to the next; a non-idempotent call moves on only when the
    request never reached the server. Any answer, error answers included, ends the failover."""
    last: ControlPlaneUnreachable | None = None
    for url in await endpoints.candidates():
        try:
            result = await call(url)
        except ControlPlaneUnreachable as exc:
            endpoints.failed(url)
            last = exc
            if not (idempotent or never_reached(exc)):
                raise
            continue
        endpoints.succeeded(url)
        return result
    assert last is not None
    raise last


__all__ = [
    "ControlEndpoints",
    "SrvEndpoints",
    "SrvTarget",
    "StaticEndpoint",
    "endpoints_for",
    "order_srv",
    "parse_srv_url",
    "with_failover",
]
