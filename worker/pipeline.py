"""One frame's path through the worker: claim, decode, batched features, classify, publish, mark answered."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from broker.codes import ErrorCode
from broker.contract import FrameRequest, Timings, error_message, result_message
from models.errors import ImageError
from models.head import Decision
from worker.batcher import Batched
from worker.ledger import Claim
from worker.metrics import NO_CATEGORY, WorkerMetrics

logger = logging.getLogger(__name__)


class FrameBusy(Exception):
    """Another delivery holds this frame's claim; retry after `retry_after_s` (the claim may be a dead worker's)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"frame claimed by another delivery; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class Ledger(Protocol):
    def claim(self, device: str, frame_id: str) -> Claim: ...
    def done(self, device: str, frame_id: str) -> None: ...
    def release(self, device: str, frame_id: str) -> None: ...


class Publisher(Protocol):
    def result(
        self, request: FrameRequest, message: dict[str, Any], on_delivered: Callable[[], None] | None = None
    ) -> None: ...
    def error(
        self, request: FrameRequest, message: dict[str, Any], on_delivered: Callable[[], None] | None = None
    ) -> None: ...


class FrameSource(Protocol):
    def get(self, key: str) -> FrameRequest | None: ...
    def finish(self, key: str) -> None: ...


class FeatureBatcher(Protocol):
    def submit(self, item: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    input_size: int


@dataclass(frozen=True, slots=True, eq=False)
class ServedModel:
    """One loaded model version: all a frame needs from decode to result. A frame keeps the version it started
    with to the end, so a reload never puts one version's features through another version's head."""

    info: ModelInfo
    prepare: Callable[[bytes], Any]  # decode (or, for a GPU decoder, check) one image
    features: Callable[[list[Any]], Sequence[np.ndarray | ImageError]]  # its engine, one batch of prepared images
    classify: Callable[[np.ndarray], list[Decision]]
    catalog: Mapping[str, Mapping[str, Any]]
    description: Mapping[str, str]  # name, version, backbone, engine, device: the partsight_model info labels
    categories: tuple[str, ...]


def features_by_model(items: list[tuple[ServedModel, Any]]) -> list[np.ndarray | ImageError]:
    """The micro-batcher's batch function: each prepared image goes through its own version's engine (a batch
    holds two versions only in the moment of a reload)."""
    results: list[np.ndarray | ImageError] = []
    start = 0
    while start < len(items):
        model = items[start][0]
        end = start + 1
        while end < len(items) and items[end][0] is model:
            end += 1
        results.extend(model.features([prepared for _, prepared in items[start:end]]))
        start = end
    return results


class FramePipeline:
    def __init__(
        self,
        *,
        model: Callable[[], ServedModel],
        batcher: FeatureBatcher,
        ledger: Ledger,
        frames: FrameSource,
        publisher: Publisher,
        metrics: WorkerMetrics,
        max_payload_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._model = model  # the version served now; it changes when a new one is loaded
        self._batcher = batcher
        self._ledger = ledger
        self._frames = frames
        self._publisher = publisher
        self._metrics = metrics
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock

    def handle(self, task: Mapping[str, Any]) -> str:
        """Answer the frame a task names (by claim-check key, or inline); returns the status or error code.

        PublishFailed propagates so the task is retried; the frame then stays claimable and pending.
        FrameBusy says another delivery holds the frame: retry later, without holding a thread meanwhile.
        """
        started = self._clock()
        key = task.get("frame_key")
        device, frame_id = str(task["device"]), str(task["frame_id"])
        claim = self._ledger.claim(device, frame_id)
        if not claim.granted and not claim.answered:
            raise FrameBusy(claim.retry_after_s)
        if claim.answered:
            self._metrics.duplicates.inc()
            logger.info("frame %s from %s was answered already; skipping the duplicate", frame_id, device)
            if key:
                self._frames.finish(str(key))
            return "duplicate"
        recorded = threading.Event()

        def record_answered() -> None:
            # runs the moment the broker acknowledges the answer: the shortest possible window in which
            # a crash could leave an answered frame looking unanswered (and so answered twice)
            self._ledger.done(device, frame_id)
            recorded.set()

        try:
            request = self._frames.get(str(key)) if key else FrameRequest.from_task_kwargs(task)
            if request is None:
                placeholder = FrameRequest(device=device, frame_id=frame_id, image=b"", received_at=started)
                text = "frame data expired before it was read"
                outcome = self._send_error(placeholder, ErrorCode.INTERNAL, text, record_answered)
            else:
                outcome = self._answer(request, started, record_answered)
        except BaseException:
            if not recorded.is_set():  # an answer the broker already took stays answered; the retry skips it
                self._ledger.release(device, frame_id)
            raise
        if not recorded.is_set():
            self._ledger.done(device, frame_id)
        if key:
            self._frames.finish(str(key))
        return outcome

    def _answer(self, request: FrameRequest, started: float, on_delivered: Callable[[], None]) -> str:
        model = self._model()
        queue_s = max(0.0, started - request.received_at)
        self._metrics.stage_latency.labels(stage="queue").observe(queue_s)
        t0 = time.perf_counter()
        try:
            if len(request.image) > self._max_payload_bytes:
                raise ImageError(
                    str(ErrorCode.PAYLOAD_TOO_LARGE),
                    f"image is {len(request.image)} bytes, the limit is {self._max_payload_bytes}",
                )
            prepared = model.prepare(request.image)  # decoded, or only checked for a GPU decoder
            t1 = time.perf_counter()
            batched: Batched[np.ndarray | ImageError] = self._batcher.submit((model, prepared)).result()
            t2 = time.perf_counter()
            if isinstance(batched.value, ImageError):  # a frame only the batch's decoder could refuse
                raise batched.value
            decision = model.classify(batched.value[None, :])[0]
            t3 = time.perf_counter()
        except ImageError as exc:
            return self._send_error(request, ErrorCode(exc.code), exc.message, on_delivered)
        except Exception as exc:
            logger.exception("frame %s from %s failed inside the worker", request.frame_id, request.device)
            return self._send_error(request, ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}", on_delivered)
        timings = Timings(
            queue=queue_s * 1000,
            decode=(t1 - t0) * 1000,
            features=(t2 - t1) * 1000,
            classify=(t3 - t2) * 1000,
            total=queue_s * 1000 + (t3 - t0) * 1000,
        )
        message = result_message(
            request=request,
            status=decision.status,
            product=decision.product,
            category=decision.category,
            confidence=decision.confidence,
            category_confidence=decision.category_confidence,
            top_k=decision.top_k,
            catalog=model.catalog.get(decision.product) if decision.product else None,
            model_name=model.info.name,
            model_version=model.info.version,
            timings=timings,
            completed_at=self._clock(),
        )
        t4 = time.perf_counter()
        self._publisher.result(request, message, on_delivered)
        publish_s = time.perf_counter() - t4
        stage = self._metrics.stage_latency
        stage.labels(stage="decode").observe(t1 - t0)
        stage.labels(stage="features").observe(t2 - t1)
        stage.labels(stage="classify").observe(t3 - t2)
        stage.labels(stage="publish").observe(publish_s)
        stage.labels(stage="total").observe(queue_s + (t3 - t0) + publish_s)
        self._metrics.results.labels(status=decision.status, category=decision.category or NO_CATEGORY).inc()
        return decision.status

    def _send_error(
        self, request: FrameRequest, code: ErrorCode, text: str, on_delivered: Callable[[], None] | None = None
    ) -> str:
        logger.info("frame %s from %s: %s (%s)", request.frame_id, request.device, code, text)
        message = error_message(request.device, request.frame_id, code, text, self._clock())
        self._publisher.error(request, message, on_delivered)
        self._metrics.errors.labels(code=str(code)).inc()
        return str(code)
