"""The dashboard in a real headless Chromium on a 3-region dev cluster (separate processes)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

from control.ui.projection import HEIGHT, WIDTH, project
from meridian.dev import DevCluster
from sync.catalog import KNOWN_REGIONS
from tests.browser import artifact, launch
from tests.e2e.conftest import ADMIN, REGIONS

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page with every console error, page error and request URL it produced."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)
        self.request_headers.append(request.headers)


def _observer_token(cluster: DevCluster) -> str:
    r = httpx.post(
        f"{cluster.control_url}/v1/tokens", json={"name": "ui", "scopes": ["observer"]}, headers=AUTH, timeout=10
    )
    assert r.status_code == 201, r.text
    result: str = r.json()["token"]
    return result


def _sign_in(watched: Watched, cluster: DevCluster, token: str) -> None:
    page = watched.page
    page.goto(f"{cluster.control_url}/ui/")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", token)
    page.keyboard.press("Enter")


def _open(browser: Browser, cluster: DevCluster, token: str = ADMIN, **context: object) -> Iterator[Watched]:
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context})  # type: ignore[arg-type]
    try:
        watched = Watched(ctx.new_page())
        _sign_in(watched, cluster, token)
        watched.page.wait_for_selector("body[data-rendered]")
        yield watched
        assert watched.errors == []
        assert not any(token in url for url in watched.urls), "the token must never be in a URL"
    finally:
        ctx.close()


@pytest.fixture
def ui(browser: Browser, cluster: DevCluster) -> Iterator[Watched]:
    yield from _open(browser, cluster)


def _regions(cluster: DevCluster) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{cluster.control_url}/v1/regions", headers=AUTH, timeout=10).json()
    return result


def test_one_marker_per_region_at_its_place_on_a_world_map(ui: Watched, cluster: DevCluster) -> None:
    page = ui.page
    markers = page.locator(".marker")
    expect(markers).to_have_count(len(REGIONS))
    assert len(page.locator("#land").get_attribute("d") or "") > 50_000  # the continents, not a blank canvas
    map_box = page.locator("#map").bounding_box()
    assert map_box is not None and map_box["width"] > 600
    for name in REGIONS:
        known = KNOWN_REGIONS[name]
        x, y = project(known.lat, known.lon)
        core = page.locator(f'.marker[data-region="{name}"] .core').bounding_box()
        assert core is not None
        centre = (core["x"] + core["width"] / 2, core["y"] + core["height"] / 2)
        expected = (map_box["x"] + x / WIDTH * map_box["width"], map_box["y"] + y / HEIGHT * map_box["height"])
        assert centre == pytest.approx(expected, abs=1.5), name
        assert page.locator(f'.marker[data-region="{name}"]').get_attribute("data-health") == "all"
    shot = artifact("dashboard-map.png")
    page.locator("#map-wrap").screenshot(path=str(shot))
    print(f"dashboard map screenshot: {shot}")


def test_the_browser_projection_is_the_one_the_land_was_drawn_with(ui: Watched) -> None:
    points = [(KNOWN_REGIONS[n].lat, KNOWN_REGIONS[n].lon) for n in sorted(KNOWN_REGIONS)] + [(90, -180), (-90, 180)]
    projected = ui.page.evaluate(
        """async (points) => {
            const { project, invert } = await import("/ui/projection.js");
            return points.map(([lat, lon]) => [project(lat, lon), invert(...project(lat, lon))]);
        }""",
        points,
    )
    for (lat, lon), (xy, back) in zip(points, projected, strict=True):
        assert xy == [pytest.approx(v) for v in project(lat, lon)]
        assert back == [pytest.approx(lat), pytest.approx(lon)]
    refused = ui.page.evaluate(
        """async () => {
            const { project } = await import("/ui/projection.js");
            try { project(91, 0); return "accepted"; } catch (e) { return e.name; }
        }"""
    )
    assert refused == "RangeError"


def test_a_regions_popup_lists_its_node(ui: Watched, cluster: DevCluster) -> None:
    node = next(r for r in _regions(cluster) if r["name"] == "us-east")["nodes"][0]
    ui.page.hover('.marker[data-region="us-east"]')
    popup = ui.page.locator("#popup")
    expect(popup).to_be_visible()
    expect(popup).to_contain_text("us-east")
    expect(popup).to_contain_text(node["id"])
    expect(popup).to_contain_text("applied version")
    ui.page.mouse.move(5, 5)
    expect(popup).to_be_hidden()


def test_keyboard_alone_reaches_a_region_and_asks_placement(ui: Watched) -> None:
    page = ui.page
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.region") == "ap-northeast":
            break
    else:
        pytest.fail("Tab never reached the ap-northeast marker")
    expect(page.locator("#popup")).to_contain_text("ap-northeast")
    page.keyboard.press("Enter")
    expect(page.locator("#preview-region")).to_have_text("ap-northeast")
    expect(page.locator("#preview-reason")).to_have_text("location")


def test_a_spawned_backend_appears_within_two_seconds_and_its_page_streams_ready(
    ui: Watched, cluster: DevCluster
) -> None:
    page = ui.page
    key = f"doc-ui-{time.monotonic_ns()}"
    r = httpx.post(f"{cluster.control_url}/v1/connect", json={"key": key, "template": "demo"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    spawned = time.monotonic()
    row = page.locator(f'#backend-table tr[data-backend="{r.json()["backend_id"]}"]')
    row.wait_for(timeout=2000)
    assert time.monotonic() - spawned < 2.0
    page.fill("#filter-key", key)
    expect(page.locator("#backend-table tbody tr")).to_have_count(1)
    page.select_option("#filter-status", "terminated")
    expect(page.locator("#backend-table tbody tr")).to_have_count(0)
    page.select_option("#filter-status", "")
    row.locator("a").click()
    expect(page.locator("#backend-view")).to_be_visible()
    expect(page.locator('#history li[data-status="ready"]')).to_have_count(1, timeout=15_000)
    expect(page.locator('#backend-details dd[data-field="key"]')).to_have_text(key)

    page.click("#terminate")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.locator('button[value="cancel"]').click()
    expect(page.locator('#history li[data-status="draining"]')).to_have_count(0)
    page.click("#terminate")
    dialog.locator('button[value="terminate"]').click()
    expect(page.locator('#history li[data-status="terminated"]')).to_have_count(1, timeout=15_000)
    assert all(
        h.get("authorization") != f"Bearer {ADMIN}" or "/v1/" in u
        for h, u in zip(ui.request_headers, ui.urls, strict=True)
    )


def test_clicking_near_tokyo_answers_ap_northeast_by_location(ui: Watched) -> None:
    page = ui.page
    box = page.locator("#map").bounding_box()
    assert box is not None
    x, y = project(36.2, 140.4)  # Tsukuba, some 70 km from Tokyo
    page.mouse.click(box["x"] + x / WIDTH * box["width"], box["y"] + y / HEIGHT * box["height"])
    expect(page.locator("#preview-region")).to_have_text("ap-northeast")
    expect(page.locator("#preview-reason")).to_have_text("location")
    ranking = page.locator("#ranking tbody tr")
    expect(ranking).to_have_count(len(REGIONS))
    expect(ranking.first).to_contain_text("chosen")
    expect(page.locator('#ranking tr[data-region="us-east"]')).to_contain_text("km farther")
    expect(page.locator('#preview-layer .preview-line[data-region="ap-northeast"]')).to_have_count(1)


def test_a_wrong_token_gets_a_clear_message_and_a_read_only_one_works(browser: Browser, cluster: DevCluster) -> None:
    ctx = browser.new_context()
    try:
        watched = Watched(ctx.new_page())
        _sign_in(watched, cluster, "not-a-token-anyone-issued")
        expect(watched.page.locator("#token-error")).to_contain_text("not accepted")
        expect(watched.page.locator("#token-dialog")).to_be_visible()
        assert watched.page.evaluate("sessionStorage.getItem('meridian.token')") is None
        client = httpx.post(
            f"{cluster.control_url}/v1/tokens", json={"name": "c", "scopes": ["client"]}, headers=AUTH, timeout=10
        ).json()["token"]
        watched.page.fill("#token-input", client)
        watched.page.keyboard.press("Enter")
        expect(watched.page.locator("#token-error")).to_contain_text("neither the admin nor the observer scope")
        observer = _observer_token(cluster)
        watched.page.fill("#token-input", observer)
        watched.page.keyboard.press("Enter")
        watched.page.wait_for_selector("body[data-rendered]")
        expect(watched.page.locator(".marker")).to_have_count(len(REGIONS))
        assert watched.page.evaluate("sessionStorage.getItem('meridian.token')") == observer
        watched.page.reload()  # the tab keeps it: no second question
        watched.page.wait_for_selector("body[data-rendered]")
        expect(watched.page.locator("#token-dialog")).to_be_hidden()
        # 401s and 403s are the browser's own console lines for failed fetches; nothing else may appear.
        assert [e for e in watched.errors if "401" not in e and "403" not in e] == []
        assert not any(observer in url or client in url for url in watched.urls)
    finally:
        ctx.close()


def test_a_narrow_dark_window_stays_readable(browser: Browser, cluster: DevCluster) -> None:
    for watched in _open(browser, cluster, viewport={"width": 380, "height": 800}, color_scheme="dark"):
        page = watched.page
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert dark == "rgb(21, 23, 26)"
        expect(page.locator(".marker")).to_have_count(len(REGIONS))
        page.locator("#map-wrap").screenshot(path=str(artifact("dashboard-map-narrow-dark.png")))


def test_the_page_and_its_files_are_under_500_kb_with_a_strict_policy(cluster: DevCluster) -> None:
    page = httpx.get(f"{cluster.control_url}/ui/", timeout=10)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    names = [
        "app.js",
        "api.js",
        "sse.js",
        "dom.js",
        "fleet.js",
        "map.js",
        "backends.js",
        "projection.js",
        "style.css",
        "land.json",
        "favicon.svg",
    ]
    total = len(page.content) + sum(len(httpx.get(f"{cluster.control_url}/ui/{n}", timeout=10).content) for n in names)
    assert total <= 500_000, total
    assert json.loads(httpx.get(f"{cluster.control_url}/ui/land.json", timeout=10).content)["d"].startswith("M")


def test_the_sse_reader_handles_split_chunks_crlf_comments_and_multiline_data(ui: Watched) -> None:
    events = ui.page.evaluate(
        """async (chunks) => {
            const { readEvents } = await import("/ui/sse.js");
            const body = new ReadableStream({
                start(controller) {
                    for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
                    controller.close();
                },
            });
            const seen = [];
            await readEvents(body, (e) => seen.push(e));
            return seen;
        }""",
        [
            ": keepalive\n\nid: 7\nevent: sta",
            'tus\ndata: {"a":',
            " 1}\n\r\ndata: line one\r\ndata: line two\r\n\r\nevent: regions\ndata:x\n\nevent: lost\n\n",
            "data: cut off without its blank line",
        ],
    )
    assert events == [
        {"event": "status", "data": '{"a": 1}', "id": "7"},
        {"event": "message", "data": "line one\nline two", "id": "7"},
        {"event": "regions", "data": "x", "id": "7"},
    ]


def test_region_health_load_and_lag_are_derived_from_its_nodes(ui: Watched) -> None:
    derived = ui.page.evaluate(
        """async () => {
            const { health, load, lag } = await import("/ui/fleet.js");
            const node = (healthy, backends, capacity, applied_version) =>
                ({ id: "nd", healthy, backends, capacity, applied_version });
            const regions = [
                { capacity: null, nodes: [] },
                { capacity: null, nodes: [node(true, 3, 10, 40), node(true, 1, 10, 42)] },
                { capacity: 12, nodes: [node(true, 3, 10, 40), node(false, 2, 10, 30)] },
                { capacity: null, nodes: [node(false, 0, 10, 42)] },
            ];
            return regions.map((r) => [health(r), load(r), lag(r, 42)]);
        }"""
    )
    assert derived == [
        ["none", {"running": 0, "capacity": 0}, None],
        ["all", {"running": 4, "capacity": 20}, 2],
        ["some", {"running": 5, "capacity": 10}, 12],  # an unhealthy node's capacity does not count
        ["none", {"running": 0, "capacity": 0}, 0],
    ]


def test_a_key_written_as_html_is_shown_as_text_and_never_runs(ui: Watched, cluster: DevCluster) -> None:
    key = f'<img src=x onerror="window.pwned=1">{time.monotonic_ns()}'
    r = httpx.post(f"{cluster.control_url}/v1/connect", json={"key": key, "template": "demo"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    row = ui.page.locator(f'#backend-table tr[data-backend="{r.json()["backend_id"]}"]')
    row.wait_for(timeout=2000)
    expect(row.locator("a")).to_have_text(key)
    assert ui.page.locator("#backend-table img").count() == 0
    assert ui.page.evaluate("window.pwned") is None
    row.locator("a").click()
    expect(ui.page.locator('#backend-details dd[data-field="key"]')).to_have_text(key)
    assert ui.page.locator("#backend-view img").count() == 0


def _tab_to(page: Page, selector: str, presses: int = 80) -> None:
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement?.matches(s)", selector):
            return
    pytest.fail(f"Tab never reached {selector}")


def test_keyboard_alone_opens_a_backend_and_terminates_it_after_confirming(ui: Watched, cluster: DevCluster) -> None:
    page = ui.page
    key = f"doc-keys-{time.monotonic_ns()}"
    r = httpx.post(f"{cluster.control_url}/v1/connect", json={"key": key, "template": "demo"}, headers=AUTH, timeout=30)
    backend_id = r.json()["backend_id"]
    page.locator(f'#backend-table tr[data-backend="{backend_id}"]').wait_for(timeout=2000)
    page.locator("#filter-key").focus()
    page.keyboard.type(key)
    _tab_to(page, f'#backend-table a[href="#/backends/{backend_id}"]')
    page.keyboard.press("Enter")
    expect(page.locator("#backend-view")).to_be_visible()
    expect(page.locator('#history li[data-status="ready"]')).to_have_count(1, timeout=15_000)
    _tab_to(page, "#terminate")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    assert page.evaluate("document.activeElement.value") == "cancel"  # the safe choice has the focus
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.value") == "terminate"
    page.keyboard.press("Enter")
    expect(page.locator('#history li[data-status="terminated"]')).to_have_count(1, timeout=15_000)
    status = httpx.get(f"{cluster.control_url}/v1/backends/{backend_id}", headers=AUTH, timeout=10).json()["status"]
    assert status in ("draining", "terminated")


def test_a_draining_node_shows_on_its_marker_and_in_its_popup(ui: Watched, cluster: DevCluster) -> None:
    node = next(r for r in _regions(cluster) if r["name"] == "eu-west")["nodes"][0]["id"]
    drain = f"{cluster.control_url}/v1/nodes/{node}/drain"
    assert httpx.post(drain, json={"draining": True}, headers=AUTH, timeout=10).status_code == 200
    try:
        marker = ui.page.locator('.marker[data-region="eu-west"]')
        expect(marker.locator("text.detail")).to_contain_text("1 draining", timeout=3000)
        assert "1 node draining" in (marker.get_attribute("aria-label") or "")
        marker.hover()
        expect(ui.page.locator("#popup tbody tr").first.locator("td").last).to_have_text("yes")
    finally:
        assert httpx.post(drain, json={"draining": False}, headers=AUTH, timeout=10).status_code == 200
    expect(ui.page.locator('.marker[data-region="eu-west"] text.detail')).not_to_contain_text("draining", timeout=3000)
