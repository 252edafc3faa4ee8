"""examples/collab in two headless Chromium pages on a dev cluster: the app server (Python client)
hands both tabs the document's backend, and an edit typed in one tab appears in the other."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from meridian import processes
from meridian.dev import DevCluster
from sync.net import free_port_block
from tests.e2e.conftest import ADMIN, CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def app_server(cluster: DevCluster, built_package: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port_block(1)
    argv = [sys.executable, "-m", "examples.collab", "--control-url", cluster.control_url, "--token", ADMIN]
    proc = processes.start([*argv, "--port", str(port)], tmp_path / "collab.log", processes.clean_env())
    try:
        url = f"http://127.0.0.1:{port}"
        cluster._wait(url + "/", proc, "the example's app server", timeout_s=30)
        yield url
    finally:
        processes.stop(proc)


def test_two_tabs_edit_one_document_through_one_backend(app_server: str) -> None:
    first_answer = httpx.get(f"{app_server}/api/docs/e2e-notes", timeout=30).json()
    assert first_answer["url"] and first_answer["backend_id"].startswith("bk-")
    assert httpx.get(f"{app_server}/api/docs/Bad%20Name", timeout=10).status_code == 400
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tabs = [browser.new_page() for _ in range(2)]
            for tab in tabs:
                tab.goto(f"{app_server}/?doc=e2e-notes")
                expect(tab.locator("#text")).to_be_enabled(timeout=30_000)
            expect(tabs[0].locator("#status")).to_contain_text("2 tab(s)", timeout=10_000)
            tabs[0].locator("#text").fill("hello from the first tab")
            expect(tabs[1].locator("#text")).to_have_value("hello from the first tab", timeout=10_000)
            tabs[1].locator("#text").fill("and the second tab answers")
            expect(tabs[0].locator("#text")).to_have_value("and the second tab answers", timeout=10_000)
            for tab in tabs:
                expect(tab.locator("#status")).to_contain_text(first_answer["backend_id"])
        finally:
            browser.close()
