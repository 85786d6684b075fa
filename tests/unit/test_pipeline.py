from __future__ import annotations

import dataclasses
import io
import json
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from broker.contract import FrameRequest
from broker.framestore import PENDING_KEY, FrameStore, task_reference
from models.answer.head import Decision
from models.errors import ImageError
from models.extract.decode import DecodeLimits, decode_image
from tests.unit.fakes import FakeRedis
from worker.batcher import Batched
from worker.errors import MalformedTask, SettleFailed
from worker.ledger import DONE, FrameLedger, ledger_key
from worker.metrics import WorkerMetrics
from worker.pipeline import BatchOutcome, FramePipeline, ModelInfo, ServedModel, features_by_model
from worker.publisher import DELIVERED, REFUSED, UNCONFIRMED, Answer
from worker.runtime import served_model as served_recognizer
from worker.runtime import transport_only_model


class Frames(FrameStore):
    """The real claim-check store over the fake Redis, counting its reads."""

    def __init__(self, redis: FakeRedis) -> None:
        super().__init__(redis, data_ttl_s=3600, clock=lambda: 99.5)
        self.reads = 0
        self.stored = 0

    def get_many(self, keys: list[str]) -> list[FrameRequest | None]:
        self.reads += 1
        return super().get_many(keys)


class Publisher:
    """Takes every answer, except frames in `refuse` (the broker refused them) and in `hold` (paho keeps them
    past the wait: unconfirmed; `late` holds their answers, whose late PUBACK a test can deliver)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.refuse: set[str] = set()
        self.hold: set[str] = set()
        self.late: list[Answer] = []
        self.calls = 0

    def publish(self, answers: list[Answer]) -> list[str]:
        self.calls += 1
        states = []
        for answer in answers:
            if answer.request.frame_id in self.refuse:
                states.append(REFUSED)
            elif answer.request.frame_id in self.hold:
                self.late.append(answer)
                states.append(UNCONFIRMED)
            else:
                self.sent.append(("error" if answer.is_error else "result", json.loads(answer.payload)))
                states.append(DELIVERED)
        return states


class Batcher:
    """Runs each item at once through the worker's real batch function, as a batch of one."""

    def submit(self, item: tuple[ServedModel, Any]) -> Future[Batched[Any]]:
        future: Future[Batched[Any]] = Future()
        future.set_result(Batched(features_by_model([item])[0], 3, 0.01))
        return future


def mean_features(images: list[np.ndarray]) -> list[np.ndarray]:
    return [np.full(4, image.mean(), dtype=np.float32) for image in images]


def classify(features: np.ndarray, allowed: Any = None) -> list[Decision]:
    top = [{"product": "valve", "category": "fittings", "score": 0.9}]
    return [Decision("recognized", "valve", "fittings", 0.9, 0.95, top) for _ in features]


def jpeg(colour: tuple[int, int, int] = (120, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="JPEG")
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


class CountingRedis(FakeRedis):
    """Counts round trips: a pipeline's execute is one, as is any direct command."""

    def __init__(self) -> None:
        super().__init__()
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = super().pipeline(transaction)
        execute = pipe.execute

        def counted() -> list[Any]:
            self.round_trips += 1
            return execute()

        pipe.execute = counted
        return pipe


@pytest.fixture
def parts() -> tuple[FramePipeline, Frames, Publisher, WorkerMetrics, CountingRedis]:
    redis = CountingRedis()
    frames, publisher = Frames(redis), Publisher()
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


def entry_for(frames: Frames, image: bytes, frame_id: str = "f1", device: str = "cam") -> dict[str, Any]:
    """Stores a frame as the bridge would and returns its entry in a task."""
    request = FrameRequest(device=device, frame_id=frame_id, image=image, received_at=99.5)
    frames.stored += 1
    key = f"k-{device}-{frame_id}-{frames.stored}"
    frames.put(key, request)
    return task_reference(key, request)


def task_for(frames: Frames, image: bytes, frame_id: str = "f1") -> dict[str, Any]:
    return {"frames": [entry_for(frames, image, frame_id)]}


def statuses(outcome: BatchOutcome) -> list[str]:
    return outcome.outcomes


def test_a_good_frame_is_answered_once_with_catalog_and_timings(parts) -> None:
    pipeline, frames, publisher, metrics, redis = parts
    task = task_for(frames, jpeg())
    assert statuses(pipeline.handle(task)) == ["recognized"]
    kind, message = publisher.sent[0]
    assert kind == "result" and message["product"] == "valve" and message["catalog"]["name"] == "Ball valve"
    assert message["model"] == {"name": "m", "version": "v7"} and message["timings_ms"]["queue"] == 500.0
    key = task["frames"][0]["frame_key"]
    assert redis.zcard(PENDING_KEY) == 0 and redis.get(key) is None  # finished: data and pending entry gone
    assert statuses(pipeline.handle(task)) == ["duplicate"] and len(publisher.sent) == 1
    assert metrics.duplicates._value.get() == 1


def test_a_window_costs_three_redis_round_trips_and_one_publish_wait(parts) -> None:
    """Claims in one round trip, the frames' data in one read, answers recorded and data removed in one."""
    pipeline, frames, publisher, _, redis = parts
    task = {"frames": [entry_for(frames, jpeg(), f"f{i}") for i in range(8)]}
    redis.round_trips = 0
    assert statuses(pipeline.handle(task)) == ["recognized"] * 8
    assert redis.round_trips == 2 and frames.reads == 1 and publisher.calls == 1  # + one MGET: the read
    assert [message["frame_id"] for _, message in publisher.sent] == [f"f{i}" for i in range(8)]


def test_a_bad_frame_fails_alone_its_window_is_answered(parts) -> None:
    pipeline, frames, publisher, metrics, _ = parts
    task = {
        "frames": [
            entry_for(frames, jpeg(), "a"),
            entry_for(frames, b"GIF89a...", "gif"),
            entry_for(frames, b"\xff\xd8\xff\xe0broken", "broken"),
            entry_for(frames, jpeg(), "b"),
        ]
    }
    assert statuses(pipeline.handle(task)) == ["recognized", "unsupported_format", "image_undecodable", "recognized"]
    kinds = {message["frame_id"]: kind for kind, message in publisher.sent}
    assert kinds == {"a": "result", "gif": "error", "broken": "error", "b": "result"}
    assert metrics.errors.labels(code="unsupported_format")._value.get() == 1


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
    assert statuses(pipeline.handle(task_for(frames, image))) == [code]
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
    task = task_for(frames, jpeg(), "bad")
    assert statuses(pipeline.handle(task)) == ["image_undecodable"]
    kind, message = publisher.sent[0]
    assert kind == "error" and message["error"]["message"] == "nvJPEG: bad Huffman table"
    assert metrics.errors.labels(code="image_undecodable")._value.get() == 1
    assert redis.zcard(PENDING_KEY) == 0  # answered (with its error): not redelivered
    entry = task["frames"][0]
    assert redis.get(ledger_key("cam", "bad", entry["digest"])) == DONE  # a redelivery is a duplicate


def test_expired_frame_data_is_reported_not_dropped(parts) -> None:
    pipeline, _, publisher, _, _ = parts
    outcome = pipeline.handle({"frames": [{"frame_key": "gone", "device": "cam", "frame_id": "f9", "digest": "d"}]})
    assert statuses(outcome) == ["internal"]
    assert publisher.sent[0][1]["error"]["code"] == "internal"


def test_an_unpublished_answer_is_released_and_retried_alone(parts) -> None:
    pipeline, frames, publisher, metrics, redis = parts
    task = {"frames": [entry_for(frames, jpeg(), "lost"), entry_for(frames, jpeg(), "kept")]}
    publisher.refuse = {"lost"}
    outcome = pipeline.handle(task)
    assert statuses(outcome) == ["unpublished", "recognized"]
    assert [ref.frame_id for ref in outcome.retry] == ["lost"] and outcome.retry_after_s == 2.0
    assert redis.zcard(PENDING_KEY) == 1  # still pending: the retry or the sweep will answer it
    assert metrics.publish_failures._value.get() == 1
    publisher.refuse = set()
    retried = pipeline.handle({"frames": [dict(ref.task) for ref in outcome.retry]})
    assert statuses(retried) == ["recognized"]  # its claim was given back: not mistaken for a duplicate
    assert redis.zcard(PENDING_KEY) == 0


def test_a_model_failure_is_an_internal_error(parts) -> None:
    pipeline, frames, publisher, _, _ = parts

    def broken(_: np.ndarray, allowed: Any = None) -> list[Decision]:
        raise RuntimeError("CUDA error")

    pipeline._model = lambda: served_model("v7", classify=broken)
    assert statuses(pipeline.handle(task_for(frames, jpeg()))) == ["internal"]
    assert "RuntimeError" in publisher.sent[0][1]["error"]["message"]


def test_each_window_is_answered_by_the_version_it_started_with(parts) -> None:
    pipeline, frames, publisher, _, _ = parts
    versions = iter(["v7", "v8"])
    pipeline._model = lambda: served_model(next(versions))
    pipeline.handle({"frames": [entry_for(frames, jpeg(), "a"), entry_for(frames, jpeg(), "b")]})
    pipeline.handle(task_for(frames, jpeg(), "c"))
    assert [message["model"]["version"] for _, message in publisher.sent] == ["v7", "v7", "v8"]


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


def test_a_frame_claimed_by_another_delivery_is_retried_later_not_waited_for(parts) -> None:
    pipeline, frames, publisher, _, redis = parts
    busy, free = entry_for(frames, jpeg(), "busy"), entry_for(frames, jpeg(), "free")
    redis.set(ledger_key("cam", "busy", busy["digest"]), b"claimed", ex=3)  # a worker that died mid-frame
    outcome = pipeline.handle({"frames": [busy, free]})
    assert statuses(outcome) == ["busy", "recognized"]
    assert [ref.frame_id for ref in outcome.retry] == ["busy"] and outcome.retry_after_s == 2.0
    assert [message["frame_id"] for _, message in publisher.sent] == ["free"]


def test_a_reused_frame_id_with_other_image_bytes_is_a_new_frame(parts) -> None:
    """A camera that restarts counts its frame ids from 0 again: new images under old ids are answered."""
    pipeline, frames, publisher, metrics, _ = parts
    before = jpeg()
    after = jpeg(colour=(10, 200, 10))
    assert statuses(pipeline.handle(task_for(frames, before, "000001"))) == ["recognized"]
    assert statuses(pipeline.handle(task_for(frames, after, "000001"))) == ["recognized"]
    assert statuses(pipeline.handle(task_for(frames, after, "000001"))) == ["duplicate"]  # same bytes: a repeat
    assert len(publisher.sent) == 2 and metrics.duplicates._value.get() == 1


def test_a_task_from_a_bridge_before_windows_is_still_answered_once(parts) -> None:
    """One frame a task, no digest: the ledger keys on (device, frame_id) as it always did."""
    pipeline, frames, publisher, _, redis = parts
    entry = entry_for(frames, jpeg(), "old")
    del entry["digest"]
    assert statuses(pipeline.handle(entry)) == ["recognized"]
    assert redis.get(ledger_key("cam", "old")) == DONE
    assert statuses(pipeline.handle(entry)) == ["duplicate"] and len(publisher.sent) == 1


def test_malformed_frames_in_a_window_are_counted_and_the_rest_answered(parts) -> None:
    pipeline, frames, publisher, metrics, _ = parts
    task = {"frames": [{"frame_key": "k"}, "not a mapping", entry_for(frames, jpeg(), "ok")]}
    assert statuses(pipeline.handle(task)) == ["recognized"]
    assert metrics.malformed_tasks._value.get() == 2 and len(publisher.sent) == 1
    with pytest.raises(MalformedTask):
        pipeline.handle({"frames": "nope"})


def test_the_transport_only_engine_answers_unknown_without_decoding(parts) -> None:
    pipeline, frames, publisher, _, _ = parts

    def never(_: Any) -> Any:
        raise AssertionError("the transport-only engine must not decode or compute features")

    model = dataclasses.replace(transport_only_model(), prepare=never, features=never)
    pipeline._model = lambda: model
    task = {"frames": [entry_for(frames, b"not even an image", "a"), entry_for(frames, jpeg(), "b")]}
    assert statuses(pipeline.handle(task)) == ["unknown", "unknown"]
    assert [message["status"] for _, message in publisher.sent] == ["unknown", "unknown"]
    assert publisher.sent[0][1]["model"] == {"name": "transport-only", "version": "none"}
    assert all((message["novelty"], message["matches"]) == (None, []) for _, message in publisher.sent)


def test_an_unconfirmed_answer_keeps_its_claim_and_a_late_puback_records_it(parts) -> None:
    """paho still holds the answer (a reconnect): the claim is not given back, the retry waits for it to lapse,
    and when the PUBACK comes late the frame is recorded as answered, so the retry skips it."""
    pipeline, frames, publisher, _, redis = parts
    task = task_for(frames, jpeg(), "slow")
    publisher.hold = {"slow"}
    outcome = pipeline.handle(task)
    assert statuses(outcome) == ["unpublished"] and outcome.retry_after_s == 3.5  # claim TTL 3 s, + 0.5
    entry = task["frames"][0]
    assert redis.get(ledger_key("cam", "slow", entry["digest"])) == b"claimed"  # not released
    assert redis.zcard(PENDING_KEY) == 1
    publisher.late[0].on_late_delivery()  # the broker's PUBACK, after the wait
    assert redis.get(ledger_key("cam", "slow", entry["digest"])) == DONE and redis.zcard(PENDING_KEY) == 0
    assert statuses(pipeline.handle({"frames": [dict(ref.task) for ref in outcome.retry]})) == ["duplicate"]


def test_answers_out_but_unrecorded_travel_with_the_retry_and_are_recorded_first(parts) -> None:
    pipeline, frames, publisher, _, redis = parts
    pipeline._sleep = lambda s: None
    task = {"frames": [entry_for(frames, jpeg(), "sent"), entry_for(frames, jpeg(), "refused")]}
    publisher.refuse = {"refused"}
    settle = pipeline._ledger.settle

    def redis_away(settlement: Any) -> None:
        raise ConnectionError("Redis restarting")

    pipeline._ledger.settle = redis_away  # type: ignore[method-assign]
    with pytest.raises(SettleFailed) as caught:
        pipeline.handle(task)
    failed = caught.value
    assert [ref.frame_id for ref in failed.retry] == ["refused"] and len(failed.done) == 1
    pipeline._ledger.settle = settle  # type: ignore[method-assign]
    publisher.refuse = set()
    redis.now += 3  # Redis was away: the refused frame's claim could not be given back, so it lapses first
    retry = {
        "frames": [dict(ref.task) for ref in failed.retry],
        "settle": {"done": failed.done, "finished": failed.finished},
    }
    assert statuses(pipeline.handle(retry)) == ["recognized"]
    assert statuses(pipeline.handle(task)) == ["duplicate", "duplicate"]  # the sent one was recorded, not resent
    assert [message["frame_id"] for _, message in publisher.sent] == ["sent", "refused"]
    assert redis.zcard(PENDING_KEY) == 0


def test_stored_frame_data_that_cannot_be_read_is_answered_internal_not_retried(parts) -> None:
    pipeline, frames, publisher, _, redis = parts
    entry = entry_for(frames, jpeg(), "garbled")
    redis.set(entry["frame_key"], b"\xc1 not msgpack", ex=60)
    outcome = pipeline.handle({"frames": [entry, entry_for(frames, jpeg(), "fine")]})
    assert statuses(outcome) == ["internal", "recognized"] and outcome.retry == []
    assert publisher.sent[0][1]["error"]["code"] == "internal" and redis.zcard(PENDING_KEY) == 0


def test_a_results_novelty_and_nearest_enrolled_photos_come_from_its_decision(parts) -> None:
    pipeline, frames, publisher, _, _ = parts
    nearest = (
        {"product": "valve", "photo": "fittings/valve/0003.png", "similarity": 0.8765432},
        {"product": "elbow", "photo": "fittings/elbow/0011.png", "similarity": 0.61},
    )

    def with_gallery(features: np.ndarray, allowed: Any = None) -> list[Decision]:
        return [dataclasses.replace(decision, novelty=0.0812345, matches=nearest) for decision in classify(features)]

    pipeline._model = lambda: served_model("v7", classify=with_gallery)
    assert statuses(pipeline.handle(task_for(frames, jpeg()))) == ["recognized"]
    message = publisher.sent[0][1]
    assert message["novelty"] == 0.081235
    assert message["matches"] == [
        {"product": "valve", "photo": "fittings/valve/0003.png", "similarity": 0.876543},
        {"product": "elbow", "photo": "fittings/elbow/0011.png", "similarity": 0.61},
    ]


def test_a_model_without_a_gallery_answers_novelty_null_and_no_matches(parts) -> None:
    pipeline, frames, publisher, _, _ = parts  # the fixture's classify leaves novelty and matches at their defaults
    assert statuses(pipeline.handle(task_for(frames, jpeg()))) == ["recognized"]
    message = publisher.sent[0][1]
    assert message["novelty"] is None and message["matches"] == []


def test_a_served_recognizer_is_asked_for_the_configured_number_of_matches() -> None:
    asked: list[int] = []

    def recognizer_classify(features: np.ndarray, *, matches: int = 3, allowed: Any = None) -> list[Decision]:
        asked.append(matches)
        return classify(features)

    head = SimpleNamespace(products=("valve",), categories=("fittings",))
    bundle = SimpleNamespace(
        name="m", version="v1", catalog={}, head=head, feature_space="s1", gallery=None, novelty=None
    )
    engine = SimpleNamespace(name="onnxruntime", device="cpu", prepare=None, features=mean_features)
    recognizer = SimpleNamespace(
        bundle=bundle, engine=engine, input_size=16, spec=SimpleNamespace(name="b"), classify=recognizer_classify
    )
    for configured in (0, 7):
        model = served_recognizer(recognizer, DecodeLimits(), matches=configured)  # type: ignore[arg-type]
        assert len(model.classify(np.zeros((2, 4), dtype=np.float32), None)) == 2
    assert asked == [0, 7]
