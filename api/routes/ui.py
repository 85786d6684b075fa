"""The operator page: `/ui` and its files from api/static/ (its ES modules from api/static/js/), by name only (never
a path), with a strict CSP."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from api.errors import NOT_FOUND, not_found

STATIC = Path(__file__).resolve().parents[1] / "static"
ASSET_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}
# no inline script or style, nothing from elsewhere; images fetched with the token are shown from blob: URLs
UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str, folder: Path = STATIC) -> FileResponse:
    suffix = Path(name).suffix.lower()
    path = folder / name
    if not ASSET_NAME.match(name) or suffix not in MEDIA_TYPES or not path.is_file():
        raise not_found(NOT_FOUND, f"no page file {name[:80]!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[suffix], headers=UI_HEADERS)


def router() -> APIRouter:
    routes = APIRouter(tags=["operator page"], include_in_schema=False)

    @routes.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    @routes.get("/ui")
    def page() -> FileResponse:
        return asset("index.html")

    @routes.get("/ui/{name}")
    def page_file(name: str) -> FileResponse:
        return asset(name or "index.html")

    @routes.get("/ui/js/{name}")
    def page_module(name: str) -> FileResponse:  # the page's script: ES modules importing each other as ./name.js
        return asset(name, STATIC / "js")

    return routes
