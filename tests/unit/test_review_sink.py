"""The worker's review sink: which answered frames are kept, sampling, a full queue and a failing store dropping
frames without touching the frame path, the metrics, and the pipeline handing its delivered results over."""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from broker.contract import FrameRequest
from models.answer.head import Decision
from models.errors import ReviewError
from models.store.review_dir import DirectoryReviewStore
from models.store.review_store import Added
from tests.unit.test_pipeline import Batcher, CountingRedis, Frames, Publisher, entry_for, jpeg, served_model
from worker.ledger import FrameLedger
from worker.metrics import REVIEW_DROP_REASONS, WorkerMetrics
from worker.pipeline import FramePipeline
from worker.review_sink import FrameFeatures, NoReview, ReviewSink, content_type, worth_review
from worker.runtime import transport_only_model


def result(status: str = "unknown", scores: tuple[float, ...] = (0.4, 0.3), frame_id: str = "f1") -> dict[str, Any]:
    top_k = [{"product": f"p{i}", "category": "c", "score": score} for i, score in enumerate(scores)]
    return {"frame_id": frame_id, "status": status, "top_k": top_k, "received_at": "2027-01-15T08:00:00.000Z"}


def request(frame_id: str = "f1", image: bytes = b"\xff\xd8\xff-jpeg") -> FrameRequest:
    return FrameRequest(device="cam", frame_id=frame_id, image=image, received_at=1.0)


def dropped(metrics: WorkerMetrics, reason: str) -> float:
    return float(metrics.review_dropped.labels(reason=reason)._value.get())


def kept(metrics: WorkerMetrics) -> float:
    return float(metrics.review_kept._value.get())


class MemoryStore:
    """Keeps what it is given; `gate`, when set, holds each add until it is opened."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.added: list[dict[str, Any]] = []
        self.gate = gate
        self.entered = threading.Event()

    def add(self, image: bytes, **fields: Any) -> Added:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.added.append({"image": image, **fields})
        return Added(f"id{len(self.added)}", items=len(self.added), bytes=sum(len(a["image"]) for a in self.added))

    def stats(self) -> tuple[int, int]:
        return len(self.added), sum(len(a["image"]) for a in self.added)


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


@pytest.fixture
def sinks() -> Iterator[list[ReviewSink]]:
    """Sinks a test made, closed at its end so no writer thread outlives it."""
    made: list[ReviewSink] = []
    yield made
    for sink in made:
        sink.close(timeout_s=1.0)


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("status", "scores", "margin", "expected"),
    [
        ("unknown", (0.9, 0.01), 0.1, True),  # unknown is always worth a look, however sure its best guess
        ("unknown", (), 0.1, True),  # the transport-only shape: no scores at all
        ("recognized", (0.50, 0.45), 0.1, True),  # a near tie
        ("recognized", (0.50, 0.40), 0.1, False),  # exactly the margin apart: clear enough
        ("recognized", (0.90, 0.05), 0.1, False),
        ("recognized", (0.90, 0.05), 1.01, True),  # a margin above 1 keeps every recognised frame
        ("recognized", (0.99,), 0.1, False),  # a model of one product has no runner-up
        ("recognized", (0.50, 0.45), 0.0, False),  # margin 0: only unknown frames
        ("error", (), 0.1, False),
    ],
)
def test_unknown_and_close_calls_are_worth_review(
    status: str, scores: tuple[float, ...], margin: float, expected: bool
) -> None:
    assert worth_review(result(status, scores), margin) is expected


def test_the_content_type_comes_from_the_magic_bytes() -> None:
    assert content_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert content_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert content_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert content_type(b"GIF89a") == "application/octet-stream"


def test_a_share_of_eligible_frames_is_sampled(metrics: WorkerMetrics, sinks: list[ReviewSink]) -> None:
    store = MemoryStore()
    draws = iter([0.1, 0.7, 0.49, 0.5, 0.0])
    sink = ReviewSink(store, metrics, sample=0.5, margin=0.1, chance=lambda: next(draws))
    sinks.append(sink)
    for index in range(5):
        sink.offer(request(f"f{index}"), result(frame_id=f"f{index}"))
    sink.offer(request("clear"), result("recognized", (0.9, 0.05)))  # not eligible: no draw, not counted
    sink.close()
    assert [item["frame_id"] for item in store.added] == ["f0", "f2", "f4"]
    assert kept(metrics) == 3 and dropped(metrics, "sampled") == 2
    assert metrics.review_items._value.get() == 3


def test_a_frame_is_kept_with_its_image_device_and_answer(metrics: WorkerMetrics) -> None:
    store = MemoryStore()
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1)
    answer = result()
    sink.offer(request("f7", b"\x89PNG\r\n\x1a\n-png"), answer)
    sink.close()
    (item,) = store.added
    assert item == {
        "image": b"\x89PNG\r\n\x1a\n-png",
        "content_type": "image/png",
        "device": "cam",
        "frame_id": "f7",
        "received_at": "2027-01-15T08:00:00.000Z",
        "answer": answer,
        "features": None,  # none offered
    }


def test_a_frame_is_kept_with_its_features_for_the_queue_to_group_look_alikes_by(metrics: WorkerMetrics) -> None:
    store = MemoryStore()
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1)
    asked: list[int] = []
    features = FrameFeatures("space-a", np.array([3.0, 4.0], dtype=np.float32), lambda: asked.append(1) or 0.8)
    sink.offer(request("f8"), result(), features)
    sink.close()
    (item,) = store.added
    kept = item["features"]
    assert {key: kept[key] for key in ("space", "same_product_similarity", "dim")} == {
        "space": "space-a",
        "same_product_similarity": 0.8,
        "dim": 2,
    }
    vector = np.frombuffer(base64.b64decode(kept["float16"]), dtype="<f2")
    np.testing.assert_allclose(vector, [0.6, 0.8], atol=1e-3)  # L2-normalised, float16
    assert asked == [1]  # asked for in the writer's thread, once for the frame


def test_a_full_queue_drops_the_frame_without_waiting(metrics: WorkerMetrics) -> None:
    gate = threading.Event()
    store = MemoryStore(gate)
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1, queue_items=1)
    sink.offer(request("writing"), result())
    assert store.entered.wait(5)  # the writer holds the first, blocked on the disk
    sink.offer(request("queued"), result())
    started = time.perf_counter()
    sink.offer(request("dropped"), result())
    assert time.perf_counter() - started < 0.05  # the frame path never waits for the writer
    assert dropped(metrics, "busy") == 1
    gate.set()
    sink.close()
    assert [item["frame_id"] for item in store.added] == ["writing", "queued"] and kept(metrics) == 2


def test_a_failing_store_drops_the_frame_and_logs_it(metrics: WorkerMetrics, caplog: pytest.LogCaptureFixture) -> None:
    class FullDisk(MemoryStore):
        def add(self, image: bytes, **fields: Any) -> Added:
            raise ReviewError("cannot write a review item to /review: No space left on device")

    sink = ReviewSink(FullDisk(), metrics, sample=1.0, margin=0.1)
    with caplog.at_level(logging.WARNING, logger="worker.review_sink"):
        sink.offer(request("f1"), result())
        sink.close()
    assert dropped(metrics, "error") == 1 and kept(metrics) == 0
    assert any(
        "could not keep frame f1 from cam" in r.getMessage() and "No space" in r.getMessage() for r in caplog.records
    )


def test_an_answer_the_sink_cannot_read_never_reaches_the_frame_path(metrics: WorkerMetrics) -> None:
    sink = ReviewSink(MemoryStore(), metrics, sample=1.0, margin=0.1)
    broken = {"status": "recognized", "top_k": [{"product": "a"}, {"product": "b"}]}  # no scores
    sink.offer(request(), broken)  # does not raise
    sink.close()
    assert dropped(metrics, "error") == 1


def test_refusals_and_evictions_of_a_real_store_are_counted(
    tmp_path: Path, metrics: WorkerMetrics, sinks: list[ReviewSink]
) -> None:
    store = DirectoryReviewStore(tmp_path / "review", max_items=2, max_bytes=100, max_age_s=3600)
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1)
    for index in range(3):
        sink.offer(request(f"f{index}", b"\xff\xd8\xff" + b"x" * 20), result(frame_id=f"f{index}"))
        wait_until(lambda index=index: kept(metrics) == index + 1)  # one add at a time: distinct, ordered ids
    sink.offer(request("f3", b"\xff\xd8\xff" + b"x" * 40), result(frame_id="f3"))
    sink.offer(request("huge", b"\xff\xd8\xff" + b"x" * 200), result(frame_id="huge"))
    sink.close()
    assert kept(metrics) == 4 and dropped(metrics, "evicted_count") == 2 and dropped(metrics, "too_large") == 1
    assert [item["frame_id"] for item in store.list()] == ["f3", "f2"]
    assert (metrics.review_items._value.get(), metrics.review_bytes._value.get()) == (2, 66)
    assert set(REVIEW_DROP_REASONS) == {r.labels["reason"] for r in metrics.review_dropped.collect()[0].samples}


def test_close_drains_the_queue_within_its_bound(metrics: WorkerMetrics) -> None:
    gate = threading.Event()
    store = MemoryStore(gate)  # a disk that does not answer until the test ends
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1, queue_items=4)
    for index in range(4):
        sink.offer(request(f"f{index}"), result())
    started = time.monotonic()
    sink.close(timeout_s=0.2)
    assert time.monotonic() - started < 2.0  # bounded: shutdown is not held by a stuck disk
    sink.offer(request("late"), result())  # after close: ignored, never raised
    assert store.added == []
    gate.set()  # the writer finishes the add it was in, then stops: the deadline has passed
    wait_until(lambda: not sink._thread.is_alive())
    assert [item["frame_id"] for item in store.added] == ["f0"]


# The pipeline hands every result a device got to its review queue, and nothing else.


class Recorder:
    def __init__(self) -> None:
        self.offered: list[tuple[FrameRequest, Mapping[str, Any]]] = []
        self.features: list[FrameFeatures | None] = []

    def offer(self, request: FrameRequest, result: Mapping[str, Any], features: FrameFeatures | None = None) -> None:
        self.offered.append((request, result))
        self.features.append(features)


def close_call(features: np.ndarray, allowed: Any = None) -> list[Decision]:
    """Every frame recognised as a valve, an elbow close behind (or unknown for a dark image)."""
    decisions = []
    for row in features:
        top = [
            {"product": "valve", "category": "fittings", "score": 0.48},
            {"product": "elbow", "category": "fittings", "score": 0.44},
        ]
        if float(row[0]) < 0.1:
            decisions.append(Decision("unknown", None, "fittings", 0.48, 0.92, top))
        else:
            decisions.append(Decision("recognized", "valve", "fittings", 0.48, 0.92, top))
    return decisions


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def review_pipeline(review: Any, **model: Any) -> tuple[FramePipeline, Frames, Publisher]:
    redis = CountingRedis()
    frames, publisher = Frames(redis), Publisher()
    served = served_model("v7", classify=close_call, **model)
    pipeline = FramePipeline(
        model=lambda: served,
        batcher=Batcher(),
        ledger=FrameLedger(redis, claim_ttl_s=3, done_ttl_s=60),
        frames=frames,
        publisher=publisher,
        metrics=WorkerMetrics(CollectorRegistry()),
        max_payload_bytes=100_000,
        clock=lambda: 100.0,
        review=review,
    )
    return pipeline, frames, publisher


def test_the_pipeline_offers_each_delivered_result_never_errors_or_unpublished_answers() -> None:
    recorder = Recorder()
    pipeline, frames, publisher = review_pipeline(recorder)
    dark, bright = png((0, 0, 0)), jpeg((200, 200, 200))
    publisher.refuse = {"refused"}
    task = {
        "frames": [
            entry_for(frames, dark, "dark"),
            entry_for(frames, b"GIF89a...", "gif"),
            entry_for(frames, bright, "bright"),
            entry_for(frames, bright, "refused"),
        ]
    }
    assert pipeline.handle(task).outcomes == ["unknown", "unsupported_format", "recognized", "unpublished"]
    assert [(r.frame_id, r.image) for r, _ in recorder.offered] == [("dark", dark), ("bright", bright)]
    sent = {message["frame_id"]: message for kind, message in publisher.sent if kind == "result"}
    assert [dict(answer) for _, answer in recorder.offered] == [sent["dark"], sent["bright"]]  # as the device got it
    assert recorder.features == [None, None]  # a version that names no feature space keeps none


def test_the_pipeline_offers_a_frames_features_with_its_versions_space() -> None:
    recorder = Recorder()
    pipeline, frames, _ = review_pipeline(recorder, feature_space="space-v7", same_product=lambda: 0.75)
    assert pipeline.handle({"frames": [entry_for(frames, png((0, 0, 0)), "dark")]}).outcomes == ["unknown"]
    (features,) = recorder.features
    assert features is not None and features.space == "space-v7" and features.same_product() == 0.75
    np.testing.assert_array_equal(features.vector, np.zeros(4))  # what the version's engine computed for it


def test_the_transport_only_engines_frames_are_never_offered() -> None:
    recorder = Recorder()
    pipeline, frames, _ = review_pipeline(recorder)
    model = transport_only_model()
    pipeline._model = lambda: model
    assert pipeline.handle({"frames": [entry_for(frames, jpeg(), "a")]}).outcomes == ["unknown"]
    assert recorder.offered == []


def test_a_pipeline_without_a_review_queue_keeps_nothing() -> None:
    pipeline, frames, _ = review_pipeline(None)
    assert isinstance(pipeline._review, NoReview)
    assert pipeline.handle({"frames": [entry_for(frames, png((0, 0, 0)), "a")]}).outcomes == ["unknown"]


def test_frames_through_the_pipeline_land_in_the_store(tmp_path: Path, metrics: WorkerMetrics) -> None:
    store = DirectoryReviewStore(tmp_path / "review", max_items=10, max_bytes=1 << 20, max_age_s=3600)
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1)
    pipeline, frames, _ = review_pipeline(sink)
    dark = png((0, 0, 0))
    pipeline.handle({"frames": [entry_for(frames, dark, "dark"), entry_for(frames, jpeg((200, 200, 200)), "b")]})
    sink.close()
    items = sorted(store.list(), key=lambda item: item["frame_id"])
    assert [(item["frame_id"], item["answer"]["status"]) for item in items] == [
        ("b", "recognized"),
        ("dark", "unknown"),
    ]
    assert store.image(next(i["id"] for i in items if i["frame_id"] == "dark")) == (dark, "image/png")
    assert kept(metrics) == 2


def test_a_clear_recognition_is_not_kept(tmp_path: Path, metrics: WorkerMetrics) -> None:
    store = DirectoryReviewStore(tmp_path / "review", max_items=10, max_bytes=1 << 20, max_age_s=3600)
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.01)  # 0.48 against 0.44: not close at this margin
    pipeline, frames, _ = review_pipeline(sink)
    pipeline.handle({"frames": [entry_for(frames, jpeg((200, 200, 200)), "clear")]})
    sink.close()
    assert store.list() == [] and kept(metrics) == 0


def test_the_none_sink_and_a_closed_sink_take_offers_quietly(metrics: WorkerMetrics) -> None:
    NoReview().offer(request(), result())
    NoReview().close()
    sink = ReviewSink(MemoryStore(), metrics, sample=1.0, margin=0.1)
    sink.close()
    sink.close()  # twice: no error
