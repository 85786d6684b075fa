from __future__ import annotations

import dataclasses
import io
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from broker.contract import FrameRequest
from models.decode import DecodeLimits, decode_image
from models.errors import ImageError
from models.head import Decision
from tests.unit.fakes import FakeRedis
from worker.batcher import Batched
from worker.ledger import DONE, FrameLedger, ledger_key
from worker.metrics import WorkerMetrics
from worker.pipeline import FrameBusy, FramePipeline, ModelInfo, ServedModel, features_by_model
from worker.publisher import PublishFailed


class Frames:
    def __init__(self) -> None:
        self.stored: dict[str, FrameRequest] = {}
        self.finished: list[str] = []

    def get(self, key: str) -> FrameRequest | None:
        return self.stored.get(key)

    def finish(self, key: str) -> None:
        self.finished.append(key)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def _send(self, kind: str, message: dict[str, Any], on_delivered: Any) -> None:
        if self.fail:
            raise PublishFailed("broker away")
        self.sent.append((kind, message))
        if on_delivered:
            on_delivered()

    def result(self, request: FrameRequest, message: dict[str, Any], on_delivered: Any = None) -> None:
        self._send("result", message, on_delivered)

    def error(self, request: FrameRequest, message: dict[str, Any], on_delivered: Any = None) -> None:
        self._send("error", message, on_delivered)


class Batcher:
    """Runs each item at once through the worker's real batch function, as a batch of one."""

    def submit(self, item: tuple[ServedModel, Any]) -> Future[Batched[Any]]:
        future: Future[Batched[Any]] = Future()
        future.set_result(Batched(features_by_model([item])[0], 3, 0.01))
        return future


def mean_features(images: list[np.ndarray]) -> list[np.ndarray]:
    return [np.full(4, image.mean(), dtype=np.float32) for image in images]


def classify(features: np.ndarray) -> list[Decision]:
    top = [{"product": "valve", "category": "fittings", "score": 0.9}]
    return [Decision("recognized", "valve", "fittings", 0.9, 0.95, top) for _ in features]


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (120, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def served_model(version: str, **changes: Any) -> ServedModel:
    model = ServedModel(
        info=ModelInfo("m", version, 16),
        prepare=lambda data: decode_image(data, size=16, limits=DecodeLimits()),
        features=mean_features,
        classify=classify,
        catalog={"valve": {"product": "valve", "name": "Ball valve", "category": "fittings"}},
        description={"name": "m", "version": version},
        categories=("fittings",),
    )
    return dataclasses.replace(model, **changes)


@pytest.fixture
def parts() -> tuple[FramePipeline, Frames, Publisher, WorkerMetrics, FakeRedis]:
    redis = FakeRedis()
    frames, publisher = Frames(), Publisher()
    metrics = WorkerMetrics(CollectorRegistry())
    pipeline = FramePipeline(
        model=lambda: served_model("v7"),
        batcher=Batcher(),
        ledger=FrameLedger(redis, claim_ttl_s=3, done_ttl_s=60),
        frames=frames,
        publisher=publisher,
        metrics=metrics,
        max_payload_bytes=10_000,
        clock=lambda: 100.0,
    )
    return pipeline, frames, publisher, metrics, redis


def task_for(frames: Frames, image: bytes, frame_id: str = "f1") -> dict[str, Any]:
    key = f"k-{frame_id}"
    frames.stored[key] = FrameRequest(device="cam", frame_id=frame_id, image=image, received_at=99.5)
    return {"frame_key": key, "device": "cam", "frame_id": frame_id}


def test_a_good_frame_is_answered_once_with_catalog_and_timings(parts) -> None:
    pipeline, frames, publisher, metrics, _ = parts
    task = task_for(frames, jpeg())
    assert pipeline.handle(task) == "recognized"
    kind, message = publisher.sent[0]
    assert kind == "result" and message["product"] == "valve" and message["catalog"]["name"] == "Ball valve"
    assert message["model"] == {"name": "m", "version": "v7"} and message["timings_ms"]["queue"] == 500.0
    assert frames.finished == ["k-f1"]
    assert pipeline.handle(task) == "duplicate" and len(publisher.sent) == 1
    assert metrics.duplicates._value.get() == 1


@pytest.mark.parametrize(
    ("image", "code"),
    [
        (b"GIF89a...", "unsupported_format"),
        (b"\xff\xd8\xff\xe0broken", "image_undecodable"),
        (b"\xff\xd8\xff" + b"\0" * 20_000, "payload_too_large"),
    ],
)
def test_bad_images_become_error_messages(parts, image: bytes, code: str) -> None:
    pipeline, frames, publisher, metrics, _ = parts
    assert pipeline.handle(task_for(frames, image)) == code
    kind, message = publisher.sent[0]
    assert kind == "error" and message["error"]["code"] == code and message["frame_id"] == "f1"
    assert metrics.errors.labels(code=code)._value.get() == 1


def test_a_frame_only_the_batch_decoder_refuses_gets_its_own_error(parts) -> None:
    """The GPU engine decodes inside the batch: a frame it cannot decode comes back as that frame's ImageError."""
    pipeline, frames, publisher, metrics, redis = parts

    class RefusingBatcher:
        def submit(self, item: Any) -> Future[Batched[Any]]:
            future: Future[Batched[Any]] = Future()
            future.set_result(Batched(ImageError("image_undecodable", "nvJPEG: bad Huffman table"), 2, 0.01))
            return future

    pipeline._batcher = RefusingBatcher()
    assert pipeline.handle(task_for(frames, jpeg(), "bad")) == "image_undecodable"
    kind, message = publisher.sent[0]
    assert kind == "error" and message["error"]["message"] == "nvJPEG: bad Huffman table"
    assert metrics.errors.labels(code="image_undecodable")._value.get() == 1
    assert frames.finished == ["k-bad"]  # answered (with its error): not redelivered
    assert redis.get(ledger_key("cam", "bad")) == DONE  # and recorded as answered: a redelivery is a duplicate


def test_expired_frame_data_is_reported_not_dropped(parts) -> None:
    pipeline, _, publisher, _, _ = parts
    assert pipeline.handle({"frame_key": "gone", "device": "cam", "frame_id": "f9"}) == "internal"
    assert publisher.sent[0][1]["error"]["code"] == "internal"


def test_a_failed_publish_releases_the_claim_for_the_retry(parts) -> None:
    pipeline, frames, publisher, _, _ = parts
    task = task_for(frames, jpeg())
    publisher.fail = True
    with pytest.raises(PublishFailed):
        pipeline.handle(task)
    assert frames.finished == []  # still pending: the sweep or the retry will answer it
    publisher.fail = False
    assert pipeline.handle(task) == "recognized"  # not mistaken for a duplicate


def test_a_model_failure_is_an_internal_error(parts) -> None:
    pipeline, frames, publisher, _, _ = parts

    def broken(_: np.ndarray) -> list[Decision]:
        raise RuntimeError("CUDA error")

    pipeline._model = lambda: served_model("v7", classify=broken)
    assert pipeline.handle(task_for(frames, jpeg())) == "internal"
    assert "RuntimeError" in publisher.sent[0][1]["error"]["message"]


def test_each_frame_is_answered_by_the_version_it_started_with(parts) -> None:
    pipeline, frames, publisher, _, _ = parts
    versions = iter(["v7", "v8"])
    pipeline._model = lambda: served_model(next(versions))
    pipeline.handle(task_for(frames, jpeg(), "a"))
    pipeline.handle(task_for(frames, jpeg(), "b"))
    assert [message["model"]["version"] for _, message in publisher.sent] == ["v7", "v8"]


def test_a_batch_that_straddles_a_reload_runs_each_image_through_its_own_engine() -> None:
    calls: list[tuple[str, list[int]]] = []

    def engine(name: str) -> Any:
        def features(items: list[int]) -> list[np.ndarray]:
            calls.append((name, items))
            return [np.full(2, item + (100 if name == "new" else 0), dtype=np.float32) for item in items]

        return features

    old, new = served_model("v1", features=engine("old")), served_model("v2", features=engine("new"))
    results = features_by_model([(old, 1), (old, 2), (new, 3), (new, 4), (old, 5)])
    assert calls == [("old", [1, 2]), ("new", [3, 4]), ("old", [5])]  # in order, one call per run of a version
    assert [float(row[0]) for row in results] == [1, 2, 103, 104, 5]


def test_a_failure_after_the_answer_was_taken_does_not_reopen_the_frame(parts) -> None:
    pipeline, frames, publisher, _, _ = parts
    task = task_for(frames, b"GIF89a...")
    original = publisher.error

    def error_then_reply_fails(request, message, on_delivered=None):  # type: ignore[no-untyped-def]
        original(request, message, on_delivered)  # the error topic got it
        raise PublishFailed("the response topic publish failed")

    publisher.error = error_then_reply_fails  # type: ignore[method-assign]
    with pytest.raises(PublishFailed):
        pipeline.handle(task)
    publisher.error = original  # type: ignore[method-assign]
    assert pipeline.handle(task) == "duplicate" and len(publisher.sent) == 1


def test_a_frame_claimed_by_another_delivery_is_retried_later_not_waited_for(parts) -> None:
    pipeline, frames, publisher, _, redis = parts
    redis.set(ledger_key("cam", "f1"), b"claimed", ex=3)  # a worker that died mid-frame
    with pytest.raises(FrameBusy) as caught:
        pipeline.handle(task_for(frames, jpeg()))
    assert caught.value.retry_after_s == 2.0 and publisher.sent == [] and frames.finished == []
