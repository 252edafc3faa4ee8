"""The HTTP readiness probe shared by every executor.

A backend is ready once ``GET http://host:port{path}`` gets *any* HTTP answer below 500: a 404 still
proves that something is serving HTTP on the port, while a 5xx means "up but not ready yet".
Connection errors and 5xx answers are retried with a short backoff (10 ms growing to 25 ms: a
refused loopback connect costs microseconds, and every ms of gap is cold-start latency) until the
deadline.
"""

from __future__ import annotations

import asyncio

import aiohttp

FIRST_INTERVAL_S = 0.01
MAX_INTERVAL_S = 0.025
MAX_ATTEMPT_S = 2.0  # one attempt's own bound, so a port that accepts but never answers is retried


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NotReady(TimeoutError):
    """The deadline passed without a serving answer; ``last_error`` says what the probe last saw."""

    def __init__(self, message: str, last_error: str | None) -> None:
        super().__init__(message if last_error is None else f"{message}; last: {last_error}")
        self.last_error = last_error


async def probe_ready(
    host: str,
    port: int,
    path: str,
    *,
    timeout_s: float,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """Return once the backend answers HTTP below 500; raise :class:`NotReady` after ``timeout_s``."""
    url = f"http://{format_address(host, port)}{path}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    own = session is None
    if session is None:
        # One fresh connection per attempt: a backend restarting between attempts must not be
        # mistaken for a kept-alive socket; trust_env=False so HTTP(S)_PROXY never applies.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), trust_env=False)
    interval = FIRST_INTERVAL_S
    last_error: str | None = None
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NotReady(f"no HTTP answer from {url} within {timeout_s:g}s", last_error)
            attempt = aiohttp.ClientTimeout(total=min(remaining, MAX_ATTEMPT_S))
            try:
                async with session.get(url, timeout=attempt, allow_redirects=False) as resp:
                    if resp.status < 500:
                        return
                    last_error = f"HTTP {resp.status}"
            except TimeoutError:
                # An attempt cut short by the deadline says less than what the previous one saw.
                if last_error is None or loop.time() < deadline:
                    last_error = f"no answer within {attempt.total:.3g}s"
            except (aiohttp.ClientError, OSError) as exc:
                last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NotReady(f"no HTTP answer from {url} within {timeout_s:g}s", last_error)
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, MAX_INTERVAL_S)
    finally:
        if own:
            await session.close()
