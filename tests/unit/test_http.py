from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from broker.http import route, serve
from partsight.testing.servers import free_port


def registry_with_a_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("partsight_test_things_total", "Things.", registry=registry).inc(3)
    return registry


def test_routes() -> None:
    registry = registry_with_a_counter()
    status, kind, body = route("/metrics", registry, lambda: {})
    assert status == 200 and b"partsight_test_things_total 3.0" in body and kind.startswith("text/plain")
    assert route("/healthz", registry, lambda: {"mqtt": False})[0] == 200  # alive even when not ready
    status, _, body = route("/readyz", registry, lambda: {"mqtt": True, "redis": False})
    assert status == 503 and json.loads(body) == {"ready": False, "checks": {"mqtt": True, "redis": False}}
    assert route("/readyz?verbose", registry, lambda: {"mqtt": True})[0] == 200
    assert route("/nope", registry, lambda: {})[0] == 404


def test_a_raising_check_means_not_ready() -> None:
    def broken() -> dict[str, bool]:
        raise ConnectionError("redis away")

    status, _, body = route("/readyz", CollectorRegistry(), broken)
    assert status == 503 and json.loads(body)["ready"] is False


def test_served_over_http() -> None:
    port = free_port()
    server = serve(port, registry_with_a_counter(), lambda: {"model": False}, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
    finally:
        server.shutdown()
