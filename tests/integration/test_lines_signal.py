"""A line changed by the API reaches a worker's view at once through the announcement on Redis, not only at its
next look at the lines file: the worker's own wiring (worker.runtime._reload_signal) on a real Redis."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis as redis_lib

from broker.contract import MODEL_CHANNEL
from broker.dispatch import announce_current
from models.store.plant_lines import LinesView, put_line
from partsight.testing.harness import wait_for
from partsight.testing.servers import ServerProcess
from worker.runtime import _reload_signal

pytestmark = pytest.mark.integration


def test_a_line_announced_on_redis_reaches_a_workers_view_within_a_second(redis: ServerProcess, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{redis.port}/15"  # pub/sub ignores the database: the channel is the server's
    store = tmp_path / "store"
    store.mkdir()
    view = LinesView(store, clock=time.monotonic, check_every_s=3600.0)  # its look at the file: out of the way
    assert view.current().lines == {}
    checked: list[float] = []
    reloader = SimpleNamespace(check=lambda: checked.append(time.monotonic()))
    settings = SimpleNamespace(engine="onnx", redis_url=url)
    signal = _reload_signal(settings, reloader, view)  # type: ignore[arg-type]
    assert signal is not None
    client = redis_lib.Redis.from_url(url, socket_timeout=5)
    try:
        subscribed = lambda: client.pubsub_numsub(MODEL_CHANNEL)[0][1] > 0  # type: ignore[index]  # noqa: E731
        wait_for(subscribed, 10, "the worker's subscription")
        put_line(store, "press-3", products=["p1"], categories=[], known_products={"p1"}, known_categories=set())
        assert view.current().lines == {}  # the file changed, but the view does not look for an hour
        announced = time.monotonic()
        announce_current(client, "", "lines: press-3")
        wait_for(lambda: "press-3" in view.current().lines, 1.0, "the announced line in the worker's view")
        wait_for(lambda: checked, 1.0, "the worker looking at `current` too")
        assert checked[0] - announced < 1.0
    finally:
        signal.stop()
        client.close()
