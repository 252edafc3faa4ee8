"""The operator dashboard's files at `/ui/`: a fixed set read from the package once, no path lookup."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import RedirectResponse, Response

from sync.errors import NotFound

router = APIRouter(include_in_schema=False)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

# Nothing inline, nothing from elsewhere: a script injected into a page could not run or phone home.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, content type, ETag) for every file of control/ui/static."""
    files = {}
    for entry in resources.files("control.ui").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            files[entry.name] = (body, CONTENT_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


FILES = _load()
FileName = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,64}\.[a-z]{2,4}$")]


def _serve(name: str, if_none_match: str | None) -> Response:
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"no dashboard file {name!r}")
    body, content_type, etag = found
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/")
async def index(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return _serve("index.html", if_none_match)


@router.get("/ui/{name}")
async def static_file(name: FileName, if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return _serve(name, if_none_match)
