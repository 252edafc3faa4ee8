"""The TypeScript client (clients/typescript): its npm unit tests, and in real headless Chromium
against a dev cluster: a page waits for ready on the edge's status stream, echoes over the
WebSocket through the edge, and hears `gone` when the backend is terminated; a page on the losing
side of an offline split brain hears `superseded`, asks its server again and reaches the winner."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from meridian import faults
from meridian.client import Meridian
from meridian.dev import DevCluster
from tests.e2e.conftest import ADMIN, CHROMIUM, CHROMIUM_ARGS, npm
from tests.e2e.dev_api import connect, edge_status, serves, wait_for

AppConnect = Callable[[str], dict[str, Any]]


def test_npm_typecheck_and_unit_tests(built_package: Path) -> None:
    result = npm("test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout.lower().replace("0 failed", "")


@contextlib.contextmanager
def static_server(root: Path, app_connect: AppConnect | None = None) -> Iterator[str]:
    """The package's files over HTTP; with `app_connect`, also the app server's `GET /connect?key=K`
    (what a page asks for a new URL), answered with `app_connect(K)` as JSON."""

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            target = urllib.parse.urlsplit(self.path)
            if app_connect is None or target.path != "/connect":
                super().do_GET()
                return
            key = urllib.parse.parse_qs(target.query)["key"][0]
            body = json.dumps(app_connect(key)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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


def _app_connect(cluster: DevCluster) -> AppConnect:
    """The app's server: connects the key with its API token through the control plane."""

    def connect_key(key: str) -> dict[str, Any]:
        with Meridian(cluster.control_url, ADMIN) as api:
            conn = api.connect(key, "demo")
        return {"url": conn.url, "backend_id": conn.backend_id}

    return connect_key


def _until(promise: str, timeout_s: float) -> str:
    """A page expression awaiting `promise`, settled with "timed out" after `timeout_s` (a deadline,
    not a pause: it resolves as soon as the promise does)."""
    return f"Promise.race([{promise}, new Promise((r) => setTimeout(() => r('timed out'), {timeout_s * 1000:.0f}))])"


def _unreachable(cluster: DevCluster, edge: int) -> bool:
    return bool(edge_status(cluster, edge)["control_plane"] == "unreachable")


def test_a_page_on_the_loser_of_a_split_brain_hears_superseded_and_reaches_the_winner(
    built_package: Path, cluster: DevCluster
) -> None:
    key = "ts-browser-split"
    faults.kill(cluster, "control plane")
    try:
        for i in (0, 1):
            wait_for(functools.partial(_unreachable, cluster, i), 15, f"edge {i} to notice the outage")
        answers = [connect(cluster, i, key=key) for i in (0, 1)]  # two regions spawn the key offline
        assert [a["placement"]["reason"] for a in answers] == ["offline", "offline"]
        for a in answers:
            wait_for(functools.partial(serves, a["url"], a["backend_id"]), 30, "both sides to serve")
        winner, loser = sorted(answers, key=lambda a: (a["fencing_token"], a["backend_id"]), reverse=True)
        with static_server(built_package, _app_connect(cluster)) as site, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                query = urllib.parse.urlencode({"url": loser["url"], "key": key})
                page.goto(f"{site}/test/browser/superseded.html?{query}")
                assert page.evaluate(_until("window.echo", 30)) == f"hello {key}", errors
                # From the main thread: a child started from a short-lived thread would get its
                # parent-death signal when that thread ends.
                faults.restart(cluster, "control plane", f"{cluster.control_url}/healthz")
                assert page.evaluate(_until("window.ended", 60)) == "superseded", errors
                assert page.evaluate("window.first.status") == "superseded"
                rejoined = page.evaluate(_until("window.rejoined", 30))
                assert rejoined == {"backend_id": winner["backend_id"], "echo": f"hello {key}", "status": "ready"}
                assert errors == []
            finally:
                browser.close()
    finally:
        if cluster.procs[0][1].poll() is not None:
            faults.restart(cluster, "control plane", f"{cluster.control_url}/healthz")
        faults.kill_backends([key], cluster.data_dir)
