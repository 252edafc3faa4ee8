"""The dashboard's first render and page weight, in headless Chromium, on a 3-region dev cluster.

    .venv/bin/python -m bench.dashboard [--loads 15]

First render: from navigation start to the first fleet event drawn (markers on the map), with the
token already in the tab's session storage (a returning operator). Baseline in the same run and the
same browser: loading a static file of the same server (`/ui/license-world-atlas.txt`).
Each load uses a fresh browser context (empty cache). Page weight: the decoded bytes of every
response the page loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

from bench.common import ADMIN_TOKEN, percentile
from meridian.dev import DevCluster
from sync.net import free_port_block
from tests.browser import launch

REGIONS = ["eu-west", "us-east", "ap-northeast"]
WEIGHT = """() => {
    const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
    return {bytes: entries.reduce((sum, e) => sum + e.decodedBodySize, 0),
            requests: entries.length,
            names: entries.map((e) => new URL(e.name).pathname)};
}"""


PHASES = """() => {
    const at = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
    const nav = performance.getEntriesByType("navigation")[0];
    return {html_ms: nav.responseEnd, app_start_ms: at("app-start"), stream_open_ms: at("stream-open"),
            first_regions_ms: at("first-regions"), land_drawn_ms: at("land-drawn")};
}"""


def first_render_ms(browser: Browser, url: str) -> tuple[float, dict[str, Any]]:
    context = browser.new_context()
    try:
        context.add_init_script(f"sessionStorage.setItem('meridian.token', {json.dumps(ADMIN_TOKEN)})")
        page = context.new_page()
        page.goto(url + "/ui/")
        page.wait_for_selector("body[data-rendered]")
        page.wait_for_selector(".marker")
        rendered = float(page.evaluate("document.body.dataset.rendered"))
        return rendered, {**page.evaluate(WEIGHT), **page.evaluate(PHASES)}
    finally:
        context.close()


def static_load_ms(browser: Browser, url: str) -> float:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/ui/license-world-atlas.txt")
        return float(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
    finally:
        context.close()


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 1),
        "p90_ms": round(percentile(values, 90), 1),
        "max_ms": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        dev = DevCluster(REGIONS, free_port_block(len(REGIONS) + 1), Path(tmp), ADMIN_TOKEN)
        try:
            dev.start()
            with sync_playwright() as playwright:
                browser = launch(playwright)
                try:
                    first_render_ms(browser, dev.control_url)  # warm the server's and the browser's code paths
                    loads = [first_render_ms(browser, dev.control_url) for _ in range(args.loads)]
                    baseline = [static_load_ms(browser, dev.control_url) for _ in range(args.loads)]
                finally:
                    browser.close()
        finally:
            dev.stop()
    weight = loads[-1][1]
    result = {
        "loads": args.loads,
        "first_render": stats([ms for ms, _ in loads]),
        "phases_median_ms": {
            phase: round(statistics.median(float(info[phase]) for _, info in loads if info[phase] is not None), 1)
            for phase in ("html_ms", "app_start_ms", "stream_open_ms", "first_regions_ms", "land_drawn_ms")
        },
        "baseline_static_file": stats(baseline),
        "page_weight_bytes": weight["bytes"],
        "requests": weight["requests"],
        "files": sorted(set(weight["names"])),
        "targets": {"first_render_ms": 1000, "page_weight_bytes": 500_000},
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
