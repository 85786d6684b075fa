"""The HTTP endpoint of a partsight process: `/metrics`, `/healthz` (alive) and `/readyz` (able to serve).

Standard library only, so the bridge stays light. `/readyz` answers 200 when every named check passes
and 503 otherwise, with the checks as JSON either way.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

ReadinessChecks = Callable[[], Mapping[str, bool]]


def route(path: str, registry: CollectorRegistry, checks: ReadinessChecks) -> tuple[int, str, bytes]:
    """(status, content type, body) for a GET of `path`. Pure apart from the checks it calls."""
    path = path.split("?", 1)[0]
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if path == "/healthz":
        return 200, "text/plain; charset=utf-8", b"ok\n"
    if path == "/readyz":
        try:
            results = {name: bool(ok) for name, ok in checks().items()}
        except Exception as exc:  # a failing check means not ready, never a crashed endpoint
            logger.warning("readiness check failed: %s", exc)
            results = {"checks": False}
        status = 200 if all(results.values()) else 503
        return status, "application/json", json.dumps({"ready": status == 200, "checks": results}).encode()
    return 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n"


def serve(port: int, registry: CollectorRegistry, checks: ReadinessChecks, host: str = "") -> ThreadingHTTPServer:
    """Serve the three endpoints on `port` from a daemon thread; returns the server (call shutdown() to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = route(self.path, registry, checks)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds: stay quiet
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server
