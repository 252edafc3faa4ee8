"""The collaborative page's app server: serves the page and, for each document name, asks
Meridian (with the Python client and an API token that never leaves this server) for the
document's backend; the browser then talks to that backend through its edge.

    .venv/bin/python -m examples.collab --token <admin token printed by meridian dev>

then open http://127.0.0.1:8080/ in two tabs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from meridian.client import AsyncMeridian
from sync.errors import MeridianError

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parents[1] / "clients" / "typescript"
DOC_NAME = re.compile(r"^[a-z0-9-]{1,40}$")
TEMPLATE = "collab-doc"
API: web.AppKey[AsyncMeridian] = web.AppKey("api", AsyncMeridian)


async def doc_url(request: web.Request) -> web.Response:
    """`GET /api/docs/{name}`: the URL of the document's backend (the same for every tab)."""
    name = request.match_info["name"]
    if not DOC_NAME.match(name):
        return web.json_response({"error": "document names are 1-40 of a-z, 0-9, -"}, status=400)
    try:
        conn = await request.app[API].connect(f"collab-{name}", TEMPLATE)
    except MeridianError as exc:
        return web.json_response({"error": exc.code.value, "message": exc.message}, status=exc.status)
    return web.json_response({"url": conn.url, "backend_id": conn.backend_id, "fencing_token": conn.fencing_token})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(HERE / "index.html")


def make_app(control_url: str, token: str) -> web.Application:
    app = web.Application()

    async def client(app: web.Application) -> AsyncIterator[None]:
        api = AsyncMeridian(control_url, token)
        await api.put_template(TEMPLATE, {"executor": "process", "argv": [sys.executable, str(HERE / "backend.py")]})
        app[API] = api
        yield
        await api.aclose()

    app.cleanup_ctx.append(client)
    app.router.add_get("/", index)
    app.router.add_get("/api/docs/{name}", doc_url)
    app.router.add_static("/client/", PACKAGE / "dist")
    return app


def build_typescript_client() -> None:
    """The page loads the TypeScript client's build: make it once (npm, from the committed lock file)."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("the page needs the TypeScript client built and npm is missing: install npm and run it again")
    print("building the TypeScript client (once): npm ci && npm run build", flush=True)
    for step in (["ci", "--no-audit", "--no-fund"], ["run", "build"]):
        if subprocess.run([npm, *step], cwd=PACKAGE).returncode != 0:
            sys.exit(f"npm {' '.join(step)} failed in {PACKAGE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control-url", default="http://127.0.0.1:8700")
    parser.add_argument("--token", required=True, help="an API token (meridian dev prints an admin token)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if not (PACKAGE / "dist" / "browser.js").exists():
        build_typescript_client()
    print(f"collaborative page on http://127.0.0.1:{args.port}/ (open it in two tabs)", flush=True)
    web.run_app(make_app(args.control_url, args.token), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
