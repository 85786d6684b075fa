"""Objects as a worker serves them: frames into their objects (worker.object_tracker), each decided object's
event published once on `<prefix>/<device>/event`, and a sweeper thread that closes objects whose gap has passed
and publishes again any event a killed worker left unpublished (worker.object_book's outbox).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from broker.mqtt import MqttConnection
from broker.topics import Topics
from worker.metrics import ObjectMetrics
from worker.object_book import ObjectBook
from worker.object_grouping import AutoGrouping, Unnamed
from worker.object_tracker import Decided, ObjectTracker, Seen
from worker.publisher import publish_confirmed

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 0.1  # how often open objects are looked at: a gap's decision comes this much late at most
OUTBOX_EVERY_S = 1.0  # how often unpublished events are looked for
FAILED_SWEEP_PAUSE_S = 2.0


class Objects:
    def __init__(
        self,
        tracker: ObjectTracker,
        book: ObjectBook,
        grouping: AutoGrouping | None,
        connection: MqttConnection,
        topics: Topics,
        *,
        model: Callable[[], Any],
        metrics: ObjectMetrics,
        publish_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`model`: the version served now (its catalog names a decided product, its rule decides)."""
        self._tracker = tracker
        self._book = book
        self._grouping = grouping
        self._connection = connection
        self._topics = topics
        self._model = model
        self._metrics = metrics
        self._timeout_s = publish_timeout_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, seen: Sequence[Seen], model: Any) -> tuple[list[str], list[Decided]]:
        return self._tracker.track(seen, model)

    def group(self, frames: Sequence[Unnamed], model: Any) -> list[str] | None:
        """Object names for frames that carry none; None when the worker does not group them (turned off)."""
        if self._grouping is None or not frames:
            return None
        return self._grouping.assign(frames, model.same_product())

    def publish(self, decided: Sequence[Decided]) -> None:
        """Each event to its device's event topic; those the broker took are taken off the outbox. Never raises:
        an event not confirmed stays in the outbox, and a sweeper publishes it again."""
        messages = [(self._topics.event(item.device), item.payload) for item in decided]
        acked = publish_confirmed(self._connection, messages, timeout_s=self._timeout_s)
        done = [item.key for item, ok in zip(decided, acked, strict=True) if ok]
        self._metrics.events_published.inc(len(done))
        try:
            self._book.published(done)
        except Exception as exc:  # the outbox keeps them: published again later, the event names its object
            logger.warning("could not record %d published object event(s): %s", len(done), exc)

    def sweep(self) -> None:
        """Close the objects whose gap has passed, publish their events, and publish again the overdue ones."""
        decided = self._tracker.close_due(self._model())
        if decided:
            self.publish(decided)
        now = self._clock()
        overdue = self._book.lease_unpublished(now, now + self._tracker.settings.lease_s)
        if overdue:
            logger.info("publishing %d object event(s) again that were not confirmed in time", len(overdue))
            self._metrics.events_republished.inc(len(overdue))
            republished = [Decided(key, _device_of(event), {}, event.encode()) for key, event in overdue]
            self.publish([item for item in republished if item.device])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="partsight-objects", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        last_count = 0.0
        while not self._stop.wait(SWEEP_EVERY_S):
            try:
                self.sweep()
                if time.monotonic() - last_count >= OUTBOX_EVERY_S:
                    last_count = time.monotonic()
                    open_count, outbox = self._book.counts()
                    self._metrics.open.set(open_count)
                    self._metrics.outbox.set(outbox)
            except Exception as exc:
                self._metrics.sweep_failures.inc()
                logger.warning("sweeping objects failed (%s); trying again in %.0f s", exc, FAILED_SWEEP_PAUSE_S)
                self._stop.wait(FAILED_SWEEP_PAUSE_S)


def _device_of(event: str) -> str:
    try:
        device = json.loads(event).get("device")
    except (ValueError, AttributeError):
        return ""
    return device if isinstance(device, str) else ""
