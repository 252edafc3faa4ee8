"""Debian's headless Chromium driven by Playwright (never `playwright install`): for tests and benches."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def artifact(name: str) -> Path:
    """A path under test-artifacts/ (ignored by git) for screenshots a person may want to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
