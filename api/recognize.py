"""Recognition over MQTT: one MQTT 5 connection publishes each HTTP frame where a device would, with a ResponseTopic
and CorrelationData, and one subscription hands each answer to the request that waits for it.

The frame goes through the bridge, the queue and the workers like any device's (no second pipeline); the worker
answers on this instance's reply topic with the same JSON a device gets. Thread-safe: requests come from the
HTTP server's threads and event loop, answers from paho's network thread.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from api.errors import INTERNAL, ApiError, bad_request, overloaded, unavailable
from api.recent_objects import RecentObjects
from broker.contract import new_frame_id
from broker.errors import BrokerError, TopicError
from broker.mqtt import MqttConnection
from broker.settings import MqttSettings
from broker.topics import Topics

logger = logging.getLogger(__name__)

Answer = dict[str, Any]


class Recognizer(Protocol):
    """What the app needs from recognition: submit a frame, get a future of its answer's JSON."""

    @property
    def connected(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    def submit(
        self,
        device: str,
        image: bytes,
        line: str | None = None,
        *,
        object_name: str | None = None,
        object_end: bool = False,
    ) -> Future[Answer]: ...

    def recent_objects(self, device: str | None, limit: int) -> list[Answer]: ...


def _resolve(future: Future[Answer], answer: Answer | None = None, error: BaseException | None = None) -> None:
    """Complete a future unless it is done already (answered twice, or given up on by its request)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(answer or {})
    except InvalidStateError:
        pass  # cancelled (the request timed out) or already answered (a redelivered frame): nothing waits


class MqttRecognizer:
    """Frames out on `<prefix>/<device>/frame`, answers in on `<prefix>/api/<api id>/answers`."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        topics: Topics,
        api_id: str,
        max_in_flight: int,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.topics = topics
        self.reply_topic = f"{topics.prefix}/api/{api_id}/answers"
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._waiting: dict[bytes, Future[Answer]] = {}
        self.connection = MqttConnection(
            settings,
            client_id=f"partsight-api-{api_id}",
            status_topic=topics.status("api", api_id),
            on_state=on_state,
        )
        self.objects = RecentObjects()
        self.connection.client.on_message = self._on_message
        self.connection.subscribe(self.reply_topic, qos=1)
        self.connection.subscribe(f"{topics.prefix}/+/event", qos=0)  # the objects' decisions, for the page

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._waiting)

    def start(self) -> None:
        self.connection.start()

    def wait_connected(self, timeout: float) -> None:
        """MqttUnavailable when no connection comes within `timeout` (paho keeps trying in the background)."""
        self.connection.wait_connected(timeout)

    def stop(self) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for future in waiting:
            _resolve(future, error=unavailable("the API is shutting down"))
        self.connection.stop()

    def submit(
        self,
        device: str,
        image: bytes,
        line: str | None = None,
        *,
        object_name: str | None = None,
        object_end: bool = False,
    ) -> Future[Answer]:
        """Publish one frame (on `line`, of `object_name`, the MQTT 5 user properties a device would set; None: the
        device's line, if any, and objects grouped by the worker); the future completes with the answer's JSON."""
        try:
            topic = self.topics.frame(device)
            self.topics.device_of_frame_topic(topic)  # what the bridge refuses ("status" is not a device)
        except TopicError as exc:
            raise bad_request(f"device: {exc}") from exc
        if not self.connected:
            raise unavailable(f"no connection to the MQTT broker {self.connection.settings.display}")
        correlation = uuid.uuid4().bytes
        future: Future[Answer] = Future()
        with self._lock:
            if len(self._waiting) >= self.max_in_flight:
                raise overloaded(f"{len(self._waiting)} recognitions are waiting for their answer; retry later")
            self._waiting[correlation] = future
        future.add_done_callback(lambda _: self._forget(correlation))
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        user = [("frame_id", new_frame_id()), *([("line", line)] if line is not None else [])]
        if object_name is not None:
            user += [("object", object_name), ("object_end", "1" if object_end else "0")]
        properties.UserProperty = user
        properties.ResponseTopic = self.reply_topic
        properties.CorrelationData = correlation

        def on_acked(ok: bool) -> None:
            if not ok:
                _resolve(future, error=unavailable(f"the MQTT broker refused the frame on {topic}"))

        try:
            self.connection.publish(topic, image, qos=1, properties=properties, on_acked=on_acked)
        except BrokerError as exc:  # paho did not take it: no acknowledgement will ever come
            _resolve(future, error=unavailable(f"publishing the frame failed: {exc}"))
        return future

    def recent_objects(self, device: str | None, limit: int) -> list[Answer]:
        return self.objects.newest(device, limit)

    def _forget(self, correlation: bytes) -> None:
        with self._lock:
            self._waiting.pop(correlation, None)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # never let an exception escape into paho's loop
        try:
            self._answer(message)
        except Exception:
            logger.exception("unexpected failure handling an answer on %r", getattr(message, "topic", "?"))

    def _answer(self, message: Any) -> None:
        if str(message.topic).endswith("/event"):
            self._event(message)
            return
        correlation = getattr(getattr(message, "properties", None), "CorrelationData", None)
        with self._lock:
            future = self._waiting.pop(bytes(correlation), None) if correlation is not None else None
        if future is None:
            logger.debug("an answer on %s that no request waits for (late or repeated)", message.topic)
            return
        try:
            answer = json.loads(message.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            _resolve(future, error=ApiError(502, INTERNAL, f"the worker's answer is not JSON: {exc}"))
            return
        if not isinstance(answer, dict):
            _resolve(future, error=ApiError(502, INTERNAL, "the worker's answer is not a JSON object"))
            return
        _resolve(future, answer)

    def _event(self, message: Any) -> None:
        try:
            event = json.loads(message.payload)
        except (UnicodeDecodeError, ValueError):
            event = None
        if not isinstance(event, dict) or not self.objects.add(event):
            logger.debug("a message on %s that is not an object event; ignored", message.topic)
