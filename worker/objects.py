"""Objects as a worker serves them: frames into their objects (worker.object_tracker, worker.object_grouping),
each decided object's event published once on `<prefix>/<device>/event`, and a sweeper thread that closes objects
whose gap has passed and publishes again any event left unconfirmed (worker.object_book's outbox).

Events are handed to paho at QoS 1 without waiting, so a slow broker never holds a window of frames: the broker's
PUBACK (in paho's network thread) marks the event confirmed, and the sweeper takes the confirmed events off the
outbox together, one round trip each sweep.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from broker.errors import BrokerError
from broker.mqtt import MqttConnection
from broker.topics import Topics
from worker.metrics import ObjectMetrics
from worker.object_book import ObjectBook
from worker.object_grouping import Assigned, AutoGrouping, Unnamed
from worker.object_tracker import Decided, ObjectTracker, Seen

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 0.1  # how often open objects are looked at: a gap's decision comes this much late at most
OUTBOX_EVERY_S = 1.0  # how often unconfirmed events are looked for, and the gauges read
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
    ) -> None:
        """`model`: the version served now (its catalog names a decided product, its rule decides)."""
        self._tracker = tracker
        self._book = book
        self._grouping = grouping
        self._connection = connection
        self._topics = topics
        self._model = model
        self._metrics = metrics
        self._similarity: dict[str, Future[float | None]] = {}  # by model version, computed off the frames' path
        self._similarity_pool = ThreadPoolExecutor(1, thread_name_prefix="partsight-similarity")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._confirmed: list[str] = []  # events the broker took, not yet off the outbox (paho's thread adds)
        self._confirmed_lock = threading.Lock()

    def track(self, seen: Sequence[Seen], model: Any, moved_on: Sequence[str] = ()) -> tuple[list[str], list[Decided]]:
        return self._tracker.track(seen, model, moved_on)

    def group(self, frames: Sequence[Unnamed], model: Any) -> Assigned | None:
        """Object names for frames that carry none, and the grouped objects their devices moved on from; None when
        the worker does not group them (turned off)."""
        if self._grouping is None or not frames:
            return None
        return self._grouping.assign(frames, self._same_product(model), model.feature_space)

    def _same_product(self, model: Any) -> float | None:
        """The version's same-product similarity once it is computed (in the background: until then, each frame
        without an object is an object of its own)."""
        version = str(model.info.version)
        future = self._similarity.get(version)
        if future is None:
            future = self._similarity[version] = self._similarity_pool.submit(model.same_product)
        return future.result() if future.done() and future.exception() is None else None

    def publish(self, decided: Sequence[Decided]) -> None:
        """Hand each event to paho at QoS 1; its PUBACK takes it off the outbox. Never raises: an event the broker
        does not confirm stays in the outbox, and a sweeper publishes it again."""
        for item in decided:
            try:
                topic = self._topics.event(item.device)
                self._connection.publish(topic, item.payload, qos=1, on_acked=self._on_acked(item.key))
            except (BrokerError, ValueError) as exc:
                logger.warning("the event of object %s was not published now (%s); the outbox keeps it", item.key, exc)

    def _on_acked(self, key: str) -> Callable[[bool], None]:
        def acked(ok: bool) -> None:  # paho's network thread: never raise into it, never wait on Redis
            if not ok:
                logger.warning("the broker refused the event of object %s; the outbox keeps it", key)
                return
            self._metrics.events_published.inc()
            with self._confirmed_lock:
                self._confirmed.append(key)

        return acked

    def take_confirmed_off_outbox(self) -> None:
        """Take the events the broker confirmed off the outbox, in one round trip; on failure they are kept for
        the next sweep (an event left on the outbox past its lease would be published again)."""
        with self._confirmed_lock:
            keys, self._confirmed = self._confirmed, []
        if not keys:
            return
        try:
            self._book.published(keys)
        except Exception:
            with self._confirmed_lock:
                self._confirmed[:0] = keys
            raise

    def sweep(self) -> None:
        """Close the objects whose gap has passed and publish their events (and start computing a newly loaded
        version's similarity, so grouping is ready before its first frames)."""
        model = self._model()
        if self._grouping is not None:
            self._same_product(model)
        decided = self._tracker.close_due(model)
        if decided:
            self.publish(decided)

    def republish(self) -> None:
        """Publish again the events not confirmed within the lease (their worker died, or the broker was away)."""
        overdue = self._book.lease_unpublished(self._tracker.settings.lease_s)
        if overdue:
            logger.info("publishing %d object event(s) again that were not confirmed in time", len(overdue))
            self._metrics.events_republished.inc(len(overdue))
            self.publish([Decided(key, _device_of(event), {}, event.encode()) for key, event in overdue])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="partsight-objects", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.take_confirmed_quietly()
        self._similarity_pool.shutdown(wait=False, cancel_futures=True)

    def take_confirmed_quietly(self) -> None:
        """take_confirmed_off_outbox at shutdown: a failure is logged (those events may be published again)."""
        try:
            self.take_confirmed_off_outbox()
        except Exception as exc:
            logger.warning("events the broker confirmed stay on the outbox (%s); they may be published again", exc)

    def _run(self) -> None:
        last_outbox = 0.0
        while not self._stop.wait(SWEEP_EVERY_S):
            jobs: list[Callable[[], None]] = [self.take_confirmed_off_outbox, self.sweep]
            if time.monotonic() - last_outbox >= OUTBOX_EVERY_S:
                last_outbox = time.monotonic()
                jobs += [self.republish, self._gauges]
            for job in jobs:  # each on its own: a failing sweep does not stop the outbox
                try:
                    job()
                except Exception as exc:
                    self._metrics.sweep_failures.inc()
                    logger.warning("objects: %s failed (%s); trying again", job.__name__, exc)
                    self._stop.wait(FAILED_SWEEP_PAUSE_S)

    def _gauges(self) -> None:
        open_count, outbox = self._book.counts()
        self._metrics.open.set(open_count)
        self._metrics.outbox.set(outbox)


def _device_of(event: str) -> str:
    try:
        device = json.loads(event).get("device")
    except (ValueError, AttributeError):
        return ""
    return device if isinstance(device, str) else ""
