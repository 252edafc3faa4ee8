"""JupyterLab (a real single-page app with absolute URLs, XSRF cookies and kernel WebSockets) in
a real headless Chromium, through the edge: by path routing with its base path, and by subdomain
routing — a notebook is created and `print(6*7)` runs in its kernel.

JupyterLab comes from PyPI into a test-only environment under the user's cache directory
(tests/jupyter_env.py), built on first use and reused afterwards."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocket, async_playwright, expect

from edge.app import EdgeServer
from tests.browser import CHROMIUM, CHROMIUM_ARGS, artifact
from tests.conftest import RunningControl
from tests.integration.edge_support import connect, running_edges
from tests.jupyter_env import INSTALL_TIMEOUT_S, jupyter_env

EDGE_DOMAIN = "edge.localhost"  # Chromium resolves every *.localhost name to loopback itself
UI_TIMEOUT_MS = 90_000


def _template(env: Path, work: Path) -> dict[str, Any]:
    for name in ("config", "data", "runtime", "ipython", "root"):
        (work / name).mkdir(parents=True, exist_ok=True)
    command = (
        f'exec "{env}/bin/jupyter-lab" --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" '
        '--ServerApp.base_url="$MERIDIAN_BASE_PATH/" --IdentityProvider.token= --ServerApp.password= '
        f'--ServerApp.allow_remote_access=True --allow-root --ServerApp.root_dir="{work / "root"}" '
        "--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"
    )
    return {
        "executor": "process",
        "argv": ["/bin/sh", "-c", command],
        "strip_prefix": False,
        "start_timeout_s": 120,
        "env": {
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "JUPYTER_DATA_DIR": str(work / "data"),
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "IPYTHONDIR": str(work / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
        },
    }


@pytest.fixture(scope="module")
def jupyter() -> Path:
    return jupyter_env()


@pytest.fixture
async def edge(control: RunningControl, edge_token: str, tmp_path: Path, jupyter: Path) -> AsyncIterator[EdgeServer]:
    templates = {"jupyter": _template(jupyter, tmp_path / "jupyter")}
    async with running_edges(
        control, edge_token, tmp_path, ["eu-west"], templates, edge_domain=EDGE_DOMAIN, ready_wait_s=120
    ) as (started,):
        yield started


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _landed(page: Page, pattern: str) -> None:
    try:
        await page.wait_for_url(pattern, timeout=UI_TIMEOUT_MS)
    except Exception as exc:
        body = (await page.content())[:500]
        raise AssertionError(f"the page is at {page.url}, not {pattern}: {body}") from exc


def _msg_types(frame: object) -> str:
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else str(frame)
    return " ".join(re.findall(r'"(?:msg_type|execution_state|name|text)": ?"([^"]{0,40})"', text))


async def _run_print_in_a_new_notebook(page: Page, name: str) -> None:
    frames: list[str] = []
    page.on("console", lambda m: frames.append(f"console {m.type}: {m.text}"))

    def on_websocket(ws: WebSocket) -> None:
        frames.append(f"ws open {ws.url}")
        ws.on("framesent", lambda f: frames.append(f"sent {_msg_types(f)}"))
        ws.on("framereceived", lambda f: frames.append(f"recv {_msg_types(f)}"))
        ws.on("close", lambda _: frames.append(f"ws closed {ws.url}"))

    page.on("websocket", on_websocket)
    try:
        launcher = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
        await launcher.click(timeout=UI_TIMEOUT_MS)
        # the kernel is connected (its status travels over the proxied WebSocket) before running
        status = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator")
        await expect(status).to_have_attribute("data-status", "idle", timeout=UI_TIMEOUT_MS)
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        editor = panel.locator(".jp-Cell .cm-content").first
        await editor.click(timeout=UI_TIMEOUT_MS)
        await page.keyboard.type("print(6*7)")
        await expect(editor).to_have_text("print(6*7)", timeout=UI_TIMEOUT_MS)
        output = panel.locator(".jp-OutputArea-output").first
        for attempt in range(3):  # a keystroke that lands while the cell's model is still settling is lost: run again
            await panel.locator(".jp-Cell").first.locator(".jp-InputPrompt").click()
            await page.keyboard.press("Shift+Enter")
            try:
                await expect(output).to_have_text("42", timeout=UI_TIMEOUT_MS // 3)
                break
            except AssertionError:
                if attempt == 2:
                    raise
    except Exception:
        await page.screenshot(path=artifact(f"jupyterlab-{name}.png"))
        artifact(f"jupyterlab-{name}.log").write_text("\n".join(frames))
        raise


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
async def test_jupyterlab_through_path_routing_and_subdomain_routing_runs_a_notebook(
    edge: EdgeServer, browser: Browser
) -> None:
    answer = await connect(edge, "notebook", template="jupyter")
    base = answer["base_path"]
    assert answer["subdomain_url"].startswith(f"http://{answer['backend_id']}.{EDGE_DOMAIN}:")

    by_path = await browser.new_page()
    await by_path.goto(answer["url"], timeout=UI_TIMEOUT_MS)
    await _landed(by_path, f"**{base}/lab**")
    assert answer["token"] not in by_path.url, "the token left the address bar"
    await _run_print_in_a_new_notebook(by_path, "path")

    context = await browser.new_context()
    by_subdomain = await context.new_page()
    await by_subdomain.goto(answer["subdomain_url"], timeout=UI_TIMEOUT_MS)
    await _landed(by_subdomain, f"http://{answer['backend_id']}.{EDGE_DOMAIN}:*{base}/lab**")
    await by_subdomain.goto(by_subdomain.url.split("?")[0] + "?reset", timeout=UI_TIMEOUT_MS)  # a fresh launcher
    cookies = await context.cookies()
    token_cookie = next(c for c in cookies if c["name"] == "meridian_token")
    assert token_cookie["httpOnly"] and token_cookie["sameSite"] == "Lax"
    assert token_cookie["domain"] == f"{answer['backend_id']}.{EDGE_DOMAIN}", "a host-only cookie"
    await _run_print_in_a_new_notebook(by_subdomain, "subdomain")
    await context.close()
    await asyncio.sleep(0)
