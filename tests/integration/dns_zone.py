"""A small authoritative DNS server on 127.0.0.1 (dnslib, in a thread) whose zone a test edits:
what `dns+srv://` control URLs are resolved against in the tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


@dataclass
class Zone(BaseResolver):  # type: ignore[misc]
    """name → records; `queries` counts what was asked, as (name, type)."""

    srv: dict[str, list[tuple[int, int, int, str, int]]] = field(default_factory=dict)
    """SRV name → [(priority, weight, port, target, ttl)]."""
    a: dict[str, list[str]] = field(default_factory=dict)
    aaaa: dict[str, list[str]] = field(default_factory=dict)
    ttl: int = 60
    queries: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        kind = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((name, kind))
            if kind == "SRV":
                for priority, weight, port, target, ttl in self.srv.get(name, []):
                    rdata = SRV(priority=priority, weight=weight, port=port, target=target + ".")
                    reply.add_answer(RR(name + ".", QTYPE.SRV, ttl=ttl, rdata=rdata))
            elif kind == "A":
                for ip in self.a.get(name, []):
                    reply.add_answer(RR(name + ".", QTYPE.A, ttl=self.ttl, rdata=A(ip)))
            elif kind == "AAAA":
                for ip in self.aaaa.get(name, []):
                    reply.add_answer(RR(name + ".", QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(ip)))
            known = name in self.srv or name in self.a or name in self.aaaa
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def asked(self, kind: str) -> int:
        with self.lock:
            return sum(1 for _, k in self.queries if k == kind)


@contextmanager
def dns_server(zone: Zone) -> Iterator[str]:
    """Serve `zone` over UDP on 127.0.0.1; yields the `IP:PORT` to give aiodns as its nameserver."""
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()
