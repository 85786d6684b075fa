"""The worker's side of the review queue: which answered frames are kept (unknown, or recognised with the two best
products close), sampled, and written to the ReviewStore by one background thread so no frame waits on the disk.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.contract import FrameRequest
from models.errors import ImageError
from models.extract.decode import sniff_format
from models.store.review_store import ReviewStore
from worker.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

QUEUE_ITEMS = 256  # frames waiting for the writer; beyond, a frame is dropped ("busy"), never waited for
DRAIN_S = 2.0  # at shutdown the writer finishes what is queued for at most this long
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def worth_review(result: Mapping[str, Any], margin: float) -> bool:
    """A result an operator should see: unknown, or recognised with its two best products' scores closer than
    `margin` (a near tie the model may have called wrongly)."""
    status = result.get("status")
    if status == "unknown":
        return True
    top = result.get("top_k") or []
    if status != "recognized" or len(top) < 2:
        return False
    # scores carry six decimals: 0.5 against 0.4 is a gap of 0.1, not of 0.0999999...
    return round(float(top[0]["score"]) - float(top[1]["score"]), 6) < margin


def content_type(image: bytes) -> str:
    try:
        return CONTENT_TYPES[sniff_format(image)]
    except ImageError:  # never for an answered frame: it was decoded
        return "application/octet-stream"


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    """A frame's features as the version that answered it computed them, for the queue to group look-alikes by."""

    space: str  # models.bundle.ModelBundle.feature_space: only features of one space are compared
    vector: np.ndarray = field(repr=False)
    same_product: Callable[[], float | None] = field(repr=False)  # the version's calibrated similarity (cached)

    def record(self) -> dict[str, Any]:
        """What the item keeps: the space, the similarity, and the L2-normalised vector as base64 float16."""
        vector = np.asarray(self.vector, dtype=np.float32).ravel()
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return {
            "space": self.space,
            "same_product_similarity": self.same_product(),
            "dim": len(vector),
            "float16": base64.b64encode(vector.astype("<f2").tobytes()).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class _Item:
    request: FrameRequest  # held only while queued: its image is what is kept
    result: Mapping[str, Any] = field(repr=False)
    features: FrameFeatures | None = None


class NoReview:
    """The review queue turned off (PARTSIGHT_REVIEW_SAMPLE=0, the transport-only engine): nothing is kept."""

    def offer(self, request: FrameRequest, result: Mapping[str, Any], features: FrameFeatures | None = None) -> None:
        return None

    def close(self, timeout_s: float = DRAIN_S) -> None:
        return None


class ReviewSink:
    """Takes answered frames from the frame path without blocking it; one thread writes them to the store."""

    def __init__(
        self,
        store: ReviewStore,
        metrics: WorkerMetrics,
        *,
        sample: float,
        margin: float,
        queue_items: int = QUEUE_ITEMS,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sample = sample
        self._margin = margin
        self._chance = chance
        self._dropped = {reason: metrics.review_dropped.labels(reason=reason) for reason in ("sampled", "busy")}
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_items)
        self._closed = False
        self._stop_at = float("inf")  # monotonic time after which the writer stops, set by close()
        self._thread = threading.Thread(target=self._run, name="review-writer", daemon=True)
        self._thread.start()

    def offer(self, request: FrameRequest, result: Mapping[str, Any], features: FrameFeatures | None = None) -> None:
        """Queue a frame whose answer the broker took, if it is worth review and sampled in, with its features (the
        queue groups look-alikes by them). Never blocks."""
        try:
            if self._closed or not worth_review(result, self._margin):
                return
            if self._chance() >= self._sample:
                self._dropped["sampled"].inc()
                return
            self._queue.put_nowait(_Item(request, result, features))
        except queue.Full:
            self._dropped["busy"].inc()
        except Exception:  # the window's answers are out and not yet recorded: nothing here may stop that
            self._metrics.review_dropped.labels(reason="error").inc()
            logger.exception("could not offer frame %s from %s for review", request.frame_id, request.device)

    def close(self, timeout_s: float = DRAIN_S) -> None:
        """Write what is queued for at most `timeout_s`, then stop the writer; what is left is not kept."""
        if self._closed:
            return
        self._closed = True
        self._stop_at = time.monotonic() + timeout_s
        with contextlib.suppress(queue.Full):  # the writer stops at the deadline all the same
            self._queue.put(None, timeout=timeout_s)  # room comes as the writer drains
        self._thread.join(max(0.0, self._stop_at - time.monotonic()) + 0.5)
        left = sum(1 for item in list(self._queue.queue) if item is not None)
        if left:
            logger.warning("review queue: %d frame(s) not kept at shutdown", left)

    def _run(self) -> None:
        self._update_gauges()
        while True:
            item = self._queue.get()
            if item is None or time.monotonic() > self._stop_at:
                return
            self._write(item)

    def _write(self, item: _Item) -> None:
        request, result = item.request, item.result
        try:
            features = item.features.record() if item.features is not None else None
            added = self._store.add(
                request.image,
                content_type=content_type(request.image),
                device=request.device,
                frame_id=request.frame_id,
                received_at=str(result.get("received_at") or ""),
                answer=result,
                features=features,
            )
        except Exception as exc:  # a full disk or a vanished volume costs this item, never the worker
            self._metrics.review_dropped.labels(reason="error").inc()
            logger.warning("could not keep frame %s from %s for review: %s", request.frame_id, request.device, exc)
            return
        if added.id is None:
            self._metrics.review_dropped.labels(reason=added.refused or "error").inc()
        else:
            self._metrics.review_kept.inc()
        for reason, count in added.evicted.items():
            self._metrics.review_dropped.labels(reason=reason).inc(count)
        self._metrics.review_items.set(added.items)
        self._metrics.review_bytes.set(added.bytes)

    def _update_gauges(self) -> None:
        """The store's size as this worker starts (other workers, or an earlier run, may have filled it)."""
        try:
            items, size = self._store.stats()
        except Exception as exc:
            logger.warning("could not read the review store's size: %s", exc)
            return
        self._metrics.review_items.set(items)
        self._metrics.review_bytes.set(size)
