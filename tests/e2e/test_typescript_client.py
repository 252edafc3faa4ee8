"""The TypeScript client (clients/typescript): its npm unit tests, and in real headless Chromium
against a dev cluster: a page waits for ready on the edge's status stream, echoes over the
WebSocket through the edge, and hears `gone` when the backend is terminated."""

from __future__ import annotations

import contextlib
import functools
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import sync_playwright

from meridian.client import Meridian
from meridian.dev import DevCluster
from tests.e2e.conftest import ADMIN, CHROMIUM, CHROMIUM_ARGS, npm


def test_npm_typecheck_and_unit_tests(built_package: Path) -> None:
    result = npm("test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout.lower().replace("0 failed", "")


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_page_waits_for_ready_echoes_through_the_edge_and_hears_gone(
    built_package: Path, cluster: DevCluster
) -> None:
    with Meridian(cluster.edge_url(0), ADMIN) as api:
        conn = api.connect("ts-browser-echo", "demo")
    with static_server(built_package) as site, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{site}/test/browser/echo.html?url={urllib.parse.quote(conn.url, safe='')}")
            assert page.evaluate("window.echo", None) == "hello through the edge", errors
            statuses = page.evaluate("window.statuses")
            assert statuses[-1] == "ready" and page.evaluate("window.backend.status") == "ready"
            with Meridian(cluster.control_url, ADMIN) as api:
                api.terminate(conn, hard=True)
            assert page.evaluate("window.ended") == "gone"
            assert page.evaluate("window.backend.status") == "gone" and errors == []
        finally:
            browser.close()
