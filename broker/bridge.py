"""The bridge loop: MQTT frames and enrolments in, Celery tasks out. The only module that wires paho callbacks.

An MQTT frame is acknowledged (PUBACK) only after Redis holds its task, so a frame that arrives while
Redis is away, or while the bridge dies, is redelivered by the broker instead of being lost. Enrolment
photos (`<prefix>/<device>/enrol`) go through the same ordered acknowledgements, each as its own task.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from broker.admission import Inbound, admit, frame_id_hint
from broker.codes import ErrorCode
from broker.contract import FrameRequest, encode, error_message
from broker.enrol_messages import EnrolRequest, admit_enrolment, enrol_hints, enrolment_refusal
from broker.errors import FrameRejected, PublishFailed, TopicError
from broker.metrics import BridgeMetrics
from broker.mqtt import MqttConnection, response_properties, user_properties
from broker.settings import BridgeSettings
from broker.topics import Topics

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 5.0
# The depth (frames admitted and not yet answered: the pending set's size) is sampled this often; frames
# admitted since the last sample count against the bound, and the frames answered meanwhile do not, so a long
# interval over-counts (at 0.5 s, a 40-frame bound refused frames while 16 waited); one ZCARD per 50 ms keeps
# the estimate within a few frames.
QUEUE_SAMPLE_INTERVAL_S = 0.05
# Enrolments are rare and each takes a worker seconds: their queue is sampled once a second.
ENROL_SAMPLE_EVERY = 20

# (admitted frame, admitted enrolment, or None for "acknowledge only", mid, qos)
Pending = tuple[FrameRequest | EnrolRequest | None, int, int]


class Dispatcher(Protocol):
    redeliver_after_s: float

    def enqueue_many(self, requests: list[FrameRequest]) -> None: ...
    def enqueue_enrolment(self, request: EnrolRequest) -> None: ...
    def queue_length(self) -> int: ...
    def enrol_queue_length(self) -> int: ...
    def sweep_overdue(self) -> tuple[int, int]: ...


class Bridge:
    def __init__(
        self,
        settings: BridgeSettings,
        *,
        dispatcher: Dispatcher,
        metrics: BridgeMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metrics = metrics
        self._dispatcher = dispatcher
        self._clock = clock
        # every PUBACK goes through this FIFO, so acknowledgements leave in the order frames arrived
        # (MQTT requires it for QoS 1); a None request means "acknowledge only" (a refused frame)
        self._pending: queue.Queue[Pending | None] = queue.Queue()
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        # admission bound: the last sampled depth plus what this bridge admitted since (the sample is up to
        # QUEUE_SAMPLE_INTERVAL_S old; a burst between samples must not get past the bound)
        self._depth_lock = threading.Lock()
        self._queue_depth = 0
        self._admitted_since_sample = 0
        self._in_window = 0  # frames taken from the local queue whose window is being written
        # the enrolments' own bound: the last sampled length of their Redis queue, those admitted and not yet
        # sent, and those sent since that sample
        self._enrol_depth = 0
        self._enrol_unsent = 0
        self._enrol_sent_since_sample = 0
        self.metrics.queue_limit.set(settings.max_queue_length)
        self._redis_ok = False
        self.connection = MqttConnection(
            settings.mqtt,
            client_id=f"partsight-bridge-{settings.bridge_id}",
            status_topic=self.topics.status("bridge", settings.bridge_id),
            persistent=True,
            manual_ack=True,
            session_expiry_s=settings.session_expiry_s,
            receive_maximum=settings.receive_maximum,
            on_state=lambda up: metrics.mqtt_connected.set(1 if up else 0),
            on_reconnect=metrics.mqtt_reconnects.inc,
        )
        self.connection.client.on_message = self._on_message
        self._threads = [
            threading.Thread(target=self._dispatch_loop, name="bridge-dispatch", daemon=True),
            threading.Thread(target=self._sample_queue_loop, name="bridge-queue-depth", daemon=True),
        ]

    def start(self) -> None:
        self._accepting.set()
        for thread in self._threads:
            thread.start()
        self.connection.subscribe(self.topics.frame_subscription(self.settings.share_group), qos=1)
        self.connection.subscribe(self.topics.enrol_subscription(self.settings.share_group), qos=1)
        self.connection.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking frames, hand over those already taken, then disconnect.

        Frames that arrive after this point stay unacknowledged, so the broker keeps them for our session.
        """
        logger.info("bridge draining %d frame(s) before exit", self._pending.qsize())
        self._accepting.clear()
        self._pending.put(None)
        self._threads[0].join(timeout)
        self._stopped.set()
        self.connection.stop()

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: connected to MQTT, Redis answering, taking frames (false while draining)."""
        return {
            "mqtt": self.connection.connected,
            "redis": self._redis_ok,
            "accepting": self._accepting.is_set(),
        }

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Never let an exception escape into paho's loop: count it and keep serving.
        try:
            self._handle(message)
        except Exception:
            topic = str(getattr(message, "topic", "?"))
            logger.exception("unexpected failure handling a message on %r", topic)
            if topic.endswith("/enrol"):
                self.metrics.enrolments.labels(outcome=str(ErrorCode.INTERNAL)).inc()
            else:
                self.metrics.frames_rejected.labels(reason=str(ErrorCode.INTERNAL)).inc()
            self._pending.put((None, message.mid, message.qos))

    def _handle(self, message: Any) -> None:
        if not self._accepting.is_set():
            return  # left unacknowledged: redelivered to our session after restart
        props = getattr(message, "properties", None)
        inbound = Inbound(
            topic=message.topic,
            payload=message.payload,
            user_properties=user_properties(props),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
        )
        if inbound.topic.endswith("/enrol"):
            self._handle_enrolment(inbound, message.mid, message.qos)
            return
        self.metrics.frames_received.inc()
        self.metrics.payload_size.observe(len(inbound.payload))
        try:
            device = self.topics.device_of_frame_topic(inbound.topic)
        except TopicError as exc:
            logger.warning("ignoring message on unknown topic: %s", exc)
            self.metrics.frames_rejected.labels(reason="unknown_topic").inc()
            self._pending.put((None, message.mid, message.qos))
            return
        self.metrics.saw_device(device, time.time())
        try:
            request = admit(
                inbound, device=device, max_payload_bytes=self.settings.max_payload_bytes, received_at=self._clock()
            )
            self._admit_within_bound()
        except FrameRejected as exc:
            self._reject(inbound, device, exc)
            self._pending.put((None, message.mid, message.qos))
            return
        self.metrics.pending.inc()
        self._pending.put((request, message.mid, message.qos))

    def _handle_enrolment(self, inbound: Inbound, mid: int, qos: int) -> None:
        try:
            device = self.topics.device_of_enrol_topic(inbound.topic)
        except TopicError as exc:
            logger.warning("ignoring message on unknown topic: %s", exc)
            self.metrics.frames_rejected.labels(reason="unknown_topic").inc()
            self._pending.put((None, mid, qos))
            return
        try:
            request = admit_enrolment(
                inbound, device=device, max_payload_bytes=self.settings.max_payload_bytes, received_at=self._clock()
            )
            self._admit_enrolment_within_bound()
        except FrameRejected as exc:
            self._refuse_enrolment(inbound, device, exc)
            self._pending.put((None, mid, qos))
            return
        logger.info("enrolment %s of %s from %s admitted", request.frame_id, request.product, device)
        self._pending.put((request, mid, qos))

    def _admit_enrolment_within_bound(self) -> None:
        with self._depth_lock:
            depth = self._enrol_depth + self._enrol_unsent + self._enrol_sent_since_sample
            if depth >= self.settings.max_enrol_queue_length:
                raise FrameRejected(ErrorCode.OVERLOADED, f"{depth} enrolments are waiting; retry later")
            self._enrol_unsent += 1

    def _refuse_enrolment(self, inbound: Inbound, device: str, exc: FrameRejected) -> None:
        frame_id, product = enrol_hints(inbound, self.settings.max_payload_bytes)
        logger.info("refused enrolment %s of %s from %s: %s (%s)", frame_id, product, device, exc.code, exc.message)
        self.metrics.enrolments.labels(outcome=str(exc.code)).inc()
        refusal = enrolment_refusal(
            device=device, frame_id=frame_id, product=product, code=exc.code, message=exc.message, at=self._clock()
        )
        self._tell(self.topics.error(device), encode(refusal))

    def _admit_within_bound(self) -> None:
        with self._depth_lock:
            depth = self._queue_depth + self._admitted_since_sample
            if depth >= self.settings.max_queue_length:
                raise FrameRejected(ErrorCode.OVERLOADED, f"{depth} frames are waiting; retry later")
            self._admitted_since_sample += 1

    def _reject(self, inbound: Inbound, device: str, exc: FrameRejected) -> None:
        frame_id = frame_id_hint(inbound)
        logger.info("rejected frame %s from %s: %s (%s)", frame_id, device, exc.code, exc.message)
        self.metrics.frames_rejected.labels(reason=str(exc.code)).inc()
        payload = encode(error_message(device, frame_id, exc.code, exc.message, self._clock()))
        self._tell(self.topics.error(device), payload)
        if inbound.response_topic and self.connection.is_v5:
            self._tell(inbound.response_topic, payload, response_properties(inbound.correlation_data))

    def _tell(self, topic: str, payload: bytes, properties: Any = None) -> None:
        """A refusal to its device: at QoS 1 paho resends it after a reconnect; one it did not take is logged."""
        try:
            self.connection.publish(topic, payload, qos=1, properties=properties)
        except PublishFailed as exc:
            logger.warning("the refusal on %s was not sent: %s", topic, exc)

    def _next_window(self) -> tuple[list[Pending], bool]:
        """The next window: up to `window_frames` frames (or `window_bytes`), collected for at most `window_ms`.

        Without a backlog it closes as soon as nothing else is waiting, so a lone frame is never held back;
        frames that pile up while the previous window is being written ride in the next one. With a backlog
        (a full window already waiting or in service) it waits up to `window_ms` for more: fewer, fuller
        tasks for frames that would mostly wait behind that backlog anyway. An enrolment closes the window it
        joins: its photo goes to Redis at once, as its own task. Returns the window and whether the bridge is
        stopping (the stop mark was met).
        """
        first = self._pending.get()
        if first is None:
            return [], True
        window = [first]
        frames, size = (1, len(first[0].image)) if isinstance(first[0], FrameRequest) else (0, 0)
        deadline = time.monotonic() + self.settings.window_ms / 1000
        linger = self._backlogged()
        stopping = False
        closed = isinstance(first[0], EnrolRequest)
        while not closed and frames < self.settings.window_frames and size < self.settings.window_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._pending.get(timeout=remaining) if linger else self._pending.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stopping = True
                break
            window.append(item)
            if isinstance(item[0], EnrolRequest):
                closed = True
            elif item[0] is not None:
                frames += 1
                size += len(item[0].image)
        with self._depth_lock:  # out of the local queue, not yet in Redis: still counted against the bound
            self._in_window = frames
        return window, stopping

    def _backlogged(self) -> bool:
        """At least a full window of frames is already waiting or in a worker: a new window may wait up to
        `window_ms` to fill, since its frames would wait behind those anyway. Below that it leaves at once."""
        with self._depth_lock:
            return self._queue_depth >= self.settings.window_frames

    def _dispatch_loop(self) -> None:
        stopping = False
        while not stopping:
            window, stopping = self._next_window()
            requests = [request for request, _, _ in window if isinstance(request, FrameRequest)]
            if requests:
                if not self._enqueue_with_retry(requests):
                    return  # stopped while Redis was away: the window stays unacknowledged, the broker keeps it
                self.metrics.window_size.observe(len(requests))
                self.metrics.pending.dec(len(requests))
            for enrolment in (request for request, _, _ in window if isinstance(request, EnrolRequest)):
                if not self._enrol_with_retry(enrolment):
                    return  # as above: unacknowledged, so the broker delivers it again
            with self._depth_lock:
                self._in_window = 0
            for _, mid, qos in window:  # in arrival order, refusals included: MQTT wants QoS 1 acks in order
                self.connection.client.ack(mid, qos)

    def _enqueue_with_retry(self, requests: list[FrameRequest]) -> bool:
        first = requests[0]
        took = self._until_sent(
            lambda: self._dispatcher.enqueue_many(requests),
            lambda: f"{len(requests)} frame(s), the first {first.frame_id} from {first.device}",
        )
        if took is None:
            return False
        self.metrics.enqueue_latency.observe(took)
        self.metrics.frames_enqueued.inc(len(requests))
        return True

    def _enrol_with_retry(self, request: EnrolRequest) -> bool:
        took = self._until_sent(
            lambda: self._dispatcher.enqueue_enrolment(request),
            lambda: f"the enrolment {request.frame_id} of {request.product} from {request.device}",
        )
        if took is None:
            return False
        with self._depth_lock:
            self._enrol_unsent -= 1
            self._enrol_sent_since_sample += 1
        self.metrics.enrolments.labels(outcome="enqueued").inc()
        return True

    def _until_sent(self, send: Callable[[], None], what: Callable[[], str]) -> float | None:
        """Call `send` until Redis takes it, backing off; the seconds the successful call took, or None when the
        bridge stopped first."""
        delay = 0.05
        while not self._stopped.is_set():
            started = time.perf_counter()
            try:
                send()
            except Exception as exc:  # kombu/redis raise many kinds; all mean "not enqueued yet"
                self.metrics.enqueue_failures.inc()
                self.metrics.redis_connected.set(0)
                logger.warning("could not enqueue %s (%s); retrying in %.2f s", what(), exc, delay)
                self._stopped.wait(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            took = time.perf_counter() - started
            self.metrics.redis_connected.set(1)
            return took
        return None

    def sample_queue_depth(self) -> None:
        depth = self._dispatcher.queue_length()
        with self._depth_lock:  # admitted frames not yet in Redis: in the local queue, or in the window being written
            self._queue_depth = depth + int(self._pending.qsize()) + self._in_window
            self._admitted_since_sample = 0
        self._redis_ok = True
        self.metrics.queue_depth.set(depth)

    def sample_enrol_depth(self) -> None:
        depth = self._dispatcher.enrol_queue_length()
        with self._depth_lock:
            self._enrol_depth = depth
            self._enrol_sent_since_sample = 0

    def _sample_queue_loop(self) -> None:
        """Samples the queue depth (for admission and the metric) and sweeps for unanswered frames."""
        sweep_every = max(1, round(self._dispatcher.redeliver_after_s / 4 / QUEUE_SAMPLE_INTERVAL_S))
        ticks = 0
        while not self._stopped.wait(QUEUE_SAMPLE_INTERVAL_S):
            ticks += 1
            try:
                self.sample_queue_depth()
                if ticks % ENROL_SAMPLE_EVERY == 0:
                    self.sample_enrol_depth()
                if ticks % sweep_every == 0:
                    resent, expired = self._dispatcher.sweep_overdue()
                    self.metrics.frames_redelivered.inc(resent)
                    self.metrics.frames_expired.inc(expired)
            except Exception as exc:  # Redis away: admission keeps the last depth; the sweep runs next time
                self._redis_ok = False
                self.metrics.redis_connected.set(0)
                logger.debug("queue sampling or sweep failed: %s", exc)
