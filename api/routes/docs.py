"""`/docs`: the OpenAPI document in Swagger UI, served from the `swagger-ui-bundle` package, never a CDN (an
air-gapped plant has none). The page's own small script is served as a file, so no inline script is needed."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from api.errors import ApiError

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>partsight API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"><link rel="icon" href="/docs/assets/favicon-32x32.png">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script><script src="/docs/start.js"></script></body></html>
"""
START = "window.ui = SwaggerUIBundle({url: %s, dom_id: '#swagger-ui', deepLinking: true});\n"
POLICY = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def assets_folder() -> Path | None:
    try:
        import swagger_ui_bundle  # noqa: PLC0415 - optional: without it /docs says so
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def router(openapi_url: str = "/openapi.json") -> APIRouter:
    routes = APIRouter(tags=["operations"])
    folder = assets_folder()

    @routes.get("/docs", include_in_schema=False)
    def docs() -> Response:
        if folder is None:
            raise ApiError(404, "not_found", "Swagger UI is not installed (swagger-ui-bundle): see /openapi.json")
        return HTMLResponse(PAGE, headers=POLICY)

    @routes.get("/docs/start.js", include_in_schema=False)
    def start() -> Response:
        return Response(START % json.dumps(openapi_url), media_type="text/javascript", headers=POLICY)

    @routes.get("/docs/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if folder is None or name not in ASSETS:  # by name only, never a path
            raise ApiError(404, "not_found", f"no docs asset {name[:80]!r}")
        return FileResponse(folder / name, media_type=TYPES[Path(name).suffix], headers=POLICY)

    return routes
