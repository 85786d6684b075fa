"""One frame's path through the worker: claim, decode, batched features, classify, publish, mark answered."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from broker.codes import ErrorCode
from broker.contract import FrameRequest, Timings, error_message, result_message
from models.decode import DecodeLimits, decode_image
from models.errors import ImageError
from models.head import Decision
from worker.batcher import Batched
from worker.metrics import NO_CATEGORY, WorkerMetrics

logger = logging.getLogger(__name__)


class Ledger(Protocol):
    def claim(self, device: str, frame_id: str) -> bool: ...
    def done(self, device: str, frame_id: str) -> None: ...
    def release(self, device: str, frame_id: str) -> None: ...


class Publisher(Protocol):
    def result(self, request: FrameRequest, message: dict[str, Any]) -> None: ...
    def error(self, request: FrameRequest, message: dict[str, Any]) -> None: ...


class FeatureBatcher(Protocol):
    def submit(self, item: np.ndarray) -> Any: ...


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    input_size: int


class FramePipeline:
    def __init__(
        self,
        *,
        model: ModelInfo,
        classify: Callable[[np.ndarray], list[Decision]],
        batcher: FeatureBatcher,
        ledger: Ledger,
        publisher: Publisher,
        metrics: WorkerMetrics,
        limits: DecodeLimits,
        max_payload_bytes: int,
        catalog: dict[str, dict[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._model = model
        self._classify = classify
        self._batcher = batcher
        self._ledger = ledger
        self._publisher = publisher
        self._metrics = metrics
        self._limits = limits
        self._max_payload_bytes = max_payload_bytes
        self._catalog = catalog
        self._clock = clock

    def handle(self, request: FrameRequest) -> str:
        """Answer one frame; returns the status or error code sent. PublishFailed propagates (the task retries)."""
        started = self._clock()
        if not self._ledger.claim(request.device, request.frame_id):
            self._metrics.duplicates.inc()
            logger.info(
                "frame %s from %s was answered already; skipping the duplicate", request.frame_id, request.device
            )
            return "duplicate"
        try:
            outcome = self._answer(request, started)
        except BaseException:
            self._ledger.release(request.device, request.frame_id)
            raise
        self._ledger.done(request.device, request.frame_id)
        return outcome

    def _answer(self, request: FrameRequest, started: float) -> str:
        queue_s = max(0.0, started - request.received_at)
        self._metrics.stage_latency.labels(stage="queue").observe(queue_s)
        t0 = time.perf_counter()
        try:
            if len(request.image) > self._max_payload_bytes:
                raise ImageError(
                    str(ErrorCode.PAYLOAD_TOO_LARGE),
                    f"image is {len(request.image)} bytes, the limit is {self._max_payload_bytes}",
                )
            image = decode_image(request.image, size=self._model.input_size, limits=self._limits)
            t1 = time.perf_counter()
            batched: Batched[np.ndarray] = self._batcher.submit(image).result()
            t2 = time.perf_counter()
            decision = self._classify(batched.value[None, :])[0]
            t3 = time.perf_counter()
        except ImageError as exc:
            return self._send_error(request, ErrorCode(exc.code), exc.message)
        except Exception as exc:
            logger.exception("frame %s from %s failed inside the worker", request.frame_id, request.device)
            return self._send_error(request, ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
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
            catalog=self._catalog.get(decision.product) if decision.product else None,
            model_name=self._model.name,
            model_version=self._model.version,
            timings=timings,
            completed_at=self._clock(),
        )
        t4 = time.perf_counter()
        self._publisher.result(request, message)
        publish_s = time.perf_counter() - t4
        stage = self._metrics.stage_latency
        stage.labels(stage="decode").observe(t1 - t0)
        stage.labels(stage="features").observe(t2 - t1)
        stage.labels(stage="classify").observe(t3 - t2)
        stage.labels(stage="publish").observe(publish_s)
        stage.labels(stage="total").observe(queue_s + (t3 - t0) + publish_s)
        self._metrics.results.labels(status=decision.status, category=decision.category or NO_CATEGORY).inc()
        return decision.status

    def _send_error(self, request: FrameRequest, code: ErrorCode, text: str) -> str:
        logger.info("frame %s from %s: %s (%s)", request.frame_id, request.device, code, text)
        self._publisher.error(request, error_message(request.device, request.frame_id, code, text, self._clock()))
        self._metrics.errors.labels(code=str(code)).inc()
        return str(code)
