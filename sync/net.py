"""Free loopback ports: the one helper every test, benchmark, `meridian dev` and the process
executor use to pick one. A port found free can be taken by someone else before it is bound;
callers that can retry on EADDRINUSE should."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free on `host` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_port_block(n: int, host: str = "127.0.0.1", tries: int = 200) -> int:
    """A base port with the next n - 1 ports free too (a cluster's control plane and its edges)."""
    for _ in range(tries):
        base = free_port(host)
        if base + n >= 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise OSError(f"no block of {n} free ports on {host}")
