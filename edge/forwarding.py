"""The one forwarding policy: how a client request becomes the upstream request, and how the
upstream's answer head goes back. Every proxy path (the raw fast path, the aiohttp path, a hop to
another edge, subdomain routing, WebSocket upgrades, requests that waited for a starting backend)
asks this module; the paths only serialise what it decided.

Rules, in one place:
- the request target is origin form; an absolute-form target (`GET http://host/x`) has its host
  ignored (never dialled); any other form is refused;
- hop-by-hop headers, the ones `Connection` names, framing headers (each path re-frames) and
  `Expect` (the edge answers it itself) are dropped;
- a client's `x-meridian-*` headers never pass; neither do the connection token (cookie
  `meridian_token`, or `Authorization: Bearer <token>`) to a backend;
- `X-Forwarded-For/-Proto/-Host/-Prefix` are set by the edge alone; a client's own values are
  kept (and appended to) only when the peer is a configured trusted proxy;
- `Host` passes through as the client sent it;
- no value with CR, LF or NUL is ever emitted (BadRequest instead).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sync.errors import BadRequest

Headers = list[tuple[str, str]]

HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
_REQUEST_DROP = HOP_BY_HOP | {"content-length", "expect", "host"}
_FORWARDED = frozenset(("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "forwarded"))
RESPONSE_DROP = HOP_BY_HOP - {"transfer-encoding"}
"""Of a response head: the body is relayed as framed, so its framing headers stay."""

TOKEN_COOKIE = "meridian_token"
HOP_HEADER = "x-meridian-hop"
HOP_CLIENT_HEADER = "x-meridian-hop-client"
HOP_PROTO_HEADER = "x-meridian-hop-proto"
HOP_ROUTE_HEADER = "x-meridian-hop-route"
_UNSAFE = re.compile(r"[\r\n\x00]")
_TOKEN_SEGMENT = re.compile(r"/v1\.[^/?#]*")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


@dataclass(frozen=True)
class ClientFacts:
    """What the edge itself knows about whoever sent the request (never taken from its headers,
    except from a trusted proxy or a proven hop from another edge)."""

    peer: str
    scheme: str = "http"
    subdomain: bool = False
    """Routed by `<backend-id>.<edge-domain>` rather than by a path prefix."""
    token_in_path: bool = False
    """Path routing by `/<token>/…` (scripts) rather than by the stable `/<backend-id>/…`."""


@dataclass(frozen=True)
class BackendRoute:
    """A backend the edge hands the request to, and what it tells that backend."""

    backend_id: str
    region: str
    secret: str
    user: str | None
    base_path: str
    """The backend's stable prefix under path routing (`/<backend-id>`)."""
    strip_prefix: bool = True


def origin_form(target: str) -> str:
    """The path-and-query of a request target. Absolute form keeps only its path (the host a
    client names there is never used); asterisk and authority forms are refused."""
    if target.startswith("/"):
        return target
    absolute = _ABSOLUTE.match(target)
    if absolute is None:
        raise BadRequest("the request target must be a path")
    rest = target[absolute.end() :]
    if rest.startswith("?"):
        return "/" + rest
    return rest if rest.startswith("/") else "/"


def redacted(path: str) -> str:
    """A path fit for a log line: connection tokens replaced."""
    return _TOKEN_SEGMENT.sub("/<token>", path)


def check_value(value: str) -> str:
    if _UNSAFE.search(value):
        raise BadRequest("a header value would contain CR, LF or NUL")
    return value


def hop_proof(secret: str) -> str:
    """What a forwarding edge shows the owning edge: it knows the backend's secret (every edge
    replicates it), so the client facts it passes along can be believed."""
    return hmac.new(secret.encode(), b"meridian-hop", hashlib.sha256).hexdigest()


def is_proven_hop(headers: Iterable[tuple[str, str]], secret: str) -> bool:
    proof = next((v for n, v in headers if n.lower() == HOP_HEADER), None)
    return proof is not None and hmac.compare_digest(proof.encode(), hop_proof(secret).encode())


def facts_from_hop(headers: Iterable[tuple[str, str]], secret: str, socket_facts: ClientFacts) -> ClientFacts:
    """The client facts a proven hop carries; the socket's own facts otherwise."""
    found = {name.lower(): value for name, value in headers if name.lower().startswith(HOP_HEADER)}
    if not is_proven_hop(found.items(), secret):
        return socket_facts
    scheme = found.get(HOP_PROTO_HEADER, "http")
    return ClientFacts(
        peer=found.get(HOP_CLIENT_HEADER, socket_facts.peer),
        scheme=scheme if scheme in ("http", "https") else "http",
        subdomain=found.get(HOP_ROUTE_HEADER) == "subdomain",
        token_in_path=found.get(HOP_ROUTE_HEADER) == "token",
    )


def _connection_named(headers: Sequence[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= {v.strip().lower() for v in value.split(",")}
    return named


def _without_token_cookie(value: str) -> str:
    kept = [c for c in (part.strip() for part in value.split(";")) if c and c.split("=", 1)[0].strip() != TOKEN_COOKIE]
    return "; ".join(kept)


class ForwardingPolicy:
    """Per edge: which peers are trusted proxies, and the Host to assume when a client sent none."""

    def __init__(self, *, trusted_proxies: Iterable[str] = (), default_host: str) -> None:
        self.trusted_proxies = frozenset(trusted_proxies)
        self.default_host = default_host

    @staticmethod
    def upstream_path(rest: str, route: BackendRoute, facts: ClientFacts) -> str:
        """The path the backend is asked for: `rest` is the client's path after the routing prefix
        (under subdomain routing there is none: the path is the backend's as it is)."""
        if not facts.subdomain and not route.strip_prefix:
            return route.base_path + rest
        return rest

    def to_backend(
        self, headers: Sequence[tuple[str, str]], facts: ClientFacts, route: BackendRoute, token: str | None
    ) -> Headers:
        named = _connection_named(headers)
        trusted = facts.peer in self.trusted_proxies
        out: Headers = []
        host = ""
        prior: dict[str, str] = {}
        for name, value in headers:
            lower = name.lower()
            if lower == "host":
                host = value
                continue
            if lower in _REQUEST_DROP or lower in named or lower.startswith("x-meridian-"):
                continue
            if lower in _FORWARDED:
                if trusted:
                    prior[lower] = f"{prior[lower]}, {value}" if lower in prior else value
                continue
            if lower == "cookie":
                value = _without_token_cookie(value)
                if not value:
                    continue
            elif lower == "authorization" and token is not None and value.partition(" ")[2].strip() == token:
                continue
            out.append((name, value))
        host = host or self.default_host
        forwarded_for = prior.get("x-forwarded-for")
        out.insert(0, ("Host", host))
        out.append(("X-Forwarded-For", f"{forwarded_for}, {facts.peer}" if forwarded_for else facts.peer))
        out.append(("X-Forwarded-Proto", prior.get("x-forwarded-proto", facts.scheme) if trusted else facts.scheme))
        out.append(("X-Forwarded-Host", prior.get("x-forwarded-host", host) if trusted else host))
        if not facts.subdomain:
            out.append(("X-Forwarded-Prefix", route.base_path))
        out.append(("x-meridian-backend", route.backend_id))
        out.append(("x-meridian-region", route.region))
        out.append(("x-meridian-secret", route.secret))
        if route.user is not None:
            out.append(("x-meridian-user", route.user))
        for _, value in out:
            check_value(value)
        return out

    def to_edge(self, headers: Sequence[tuple[str, str]], facts: ClientFacts, secret: str) -> Headers:
        """For a hop to the edge that owns the backend: the client's end-to-end headers as sent
        (that edge applies `to_backend` to them), and the client facts, proven."""
        named = _connection_named(headers)
        out: Headers = []
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in named or lower in ("content-length", "expect"):
                continue
            if lower.startswith("x-meridian-"):
                continue
            out.append((name, value))
        if not any(name.lower() == "host" for name, _ in out):
            out.insert(0, ("Host", self.default_host))
        out.append((HOP_HEADER, hop_proof(secret)))
        out.append((HOP_CLIENT_HEADER, facts.peer))
        out.append((HOP_PROTO_HEADER, facts.scheme))
        out.append((HOP_ROUTE_HEADER, "subdomain" if facts.subdomain else "token" if facts.token_in_path else "base"))
        for _, value in out:
            check_value(value)
        return out

    @staticmethod
    def to_client(headers: Iterable[tuple[str, str]], rewrite: ResponseRewrite | None = None) -> Headers:
        """A response head's headers for the client (framing headers kept: the body is relayed as
        framed); from a backend, `Location` and cookies are kept inside its own prefix or host."""
        pairs = list(headers)
        named = _connection_named(pairs)
        out: Headers = []
        for name, value in pairs:
            lower = name.lower()
            if lower in RESPONSE_DROP or lower in named:
                continue
            if rewrite is not None:
                if lower == "location":
                    value = rewrite.location(value)
                elif lower == "set-cookie":
                    kept = rewrite.set_cookie(value)
                    if kept is None:
                        continue
                    value = kept
            out.append((name, check_value(value)))
        return out


@dataclass(frozen=True)
class ResponseRewrite:
    """Keeps a backend's redirects and cookies inside what the client sees as that backend: its
    prefix under path routing (so one backend's cookies never reach another), its own host
    (host-only cookies) under subdomain routing."""

    base_path: str
    client_prefix: str  # `/<backend-id>`, or `/<token>` for a script that used the token path
    subdomain: bool
    strip_prefix: bool

    @classmethod
    def of(cls, route: BackendRoute, facts: ClientFacts, token: str) -> ResponseRewrite:
        prefix = f"/{token}" if facts.token_in_path else route.base_path
        return cls(route.base_path, prefix, facts.subdomain, route.strip_prefix)

    def _inside(self, path: str) -> bool:
        return path == self.base_path or path.startswith(self.base_path + "/")

    def location(self, value: str) -> str:
        if self.subdomain or not value.startswith("/") or value.startswith("//"):
            return value
        if self._inside(value):
            return self.client_prefix + value[len(self.base_path) :] if self.client_prefix != self.base_path else value
        return self.client_prefix + value

    def set_cookie(self, value: str) -> str | None:
        """The cookie with its Domain removed and its Path inside the prefix; None drops it."""
        name = value.split("=", 1)[0].strip()
        if name == TOKEN_COOKIE:
            return None  # the edge's own cookie: a backend may not set it
        parts = [p.strip() for p in value.split(";")]
        kept = [parts[0]]
        path = None
        for attribute in parts[1:]:
            key = attribute.split("=", 1)[0].strip().lower()
            if key == "domain":
                continue
            if key == "path":
                path = attribute.split("=", 1)[1].strip() if "=" in attribute else "/"
                continue
            kept.append(attribute)
        if not self.subdomain:
            path = path if path is not None and self._inside(path) else self.base_path + (path or "/")
        if path is not None:
            kept.append(f"Path={path}")
        return "; ".join(kept)
