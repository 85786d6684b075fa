"""The demo's closing summary: frames sent, answers right, wrong, unknown and in error, and their latency."""

from __future__ import annotations

from typing import Any

from broker.camera import Answer
from partsight.demo import DemoSummary, FrameIds, summarize


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
