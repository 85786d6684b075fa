"""Publishes answers at QoS 1 and waits for the broker's PUBACKs: a frame counts as answered only once its answer
is out. A task's answers are all published first and then waited for together, so a window costs one wait.

Each answer ends in one of three states: delivered (the broker acknowledged it), refused (the broker refused it,
or paho could not take it: nothing is on its way), or unconfirmed (paho still holds it, for instance across a
reconnect, and may deliver it later). An unconfirmed answer is not given up on: when its PUBACK comes after
the wait, the answer's `on_late_delivery` runs, so the frame is recorded as answered and never sent twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from broker.contract import FrameRequest
from broker.errors import BrokerError
from broker.mqtt import MqttConnection, response_properties
from broker.topics import Topics

logger = logging.getLogger(__name__)

DELIVERED, REFUSED, UNCONFIRMED = "delivered", "refused", "unconfirmed"


@dataclass(frozen=True, slots=True)
class Answer:
    """One frame's answer: a result, or an error (which also goes to the response topic when there is one)."""

    request: FrameRequest
    payload: bytes
    is_error: bool
    on_late_delivery: Callable[[], None] | None = None


class _Window:
    """The PUBACKs of one window's answers: the waiting thread wakes once, when the last one is in; a PUBACK
    after the wait is over runs the answer's late-delivery hook instead."""

    def __init__(self, answers: Sequence[Answer], sends: int) -> None:
        self._answers = answers
        self._left = sends
        self._lock = threading.Lock()
        self._closed = False
        self.states: list[str] = [UNCONFIRMED] * len(answers)
        self.all_in = threading.Event()
        if sends == 0:
            self.all_in.set()

    def record(self, index: int, ok: bool, topic: str) -> None:
        """One publish settled; `index` -1 is an error's copy to a response topic (only logged when refused)."""
        late = False
        with self._lock:
            if index >= 0 and not self._closed:
                self.states[index] = DELIVERED if ok else REFUSED
            late = self._closed and index >= 0 and ok
            self._left -= 1
            if self._left == 0:
                self.all_in.set()
        if not ok:
            logger.warning("the broker refused an answer on %s", topic)
        hook = self._answers[index].on_late_delivery if late else None
        if hook is not None:
            hook()

    def close(self) -> list[str]:
        with self._lock:
            self._closed = True
            return list(self.states)


class AnswerPublisher:
    def __init__(self, connection: MqttConnection, topics: Topics, *, timeout_s: float) -> None:
        self._connection = connection
        self._topics = topics
        self._timeout_s = timeout_s

    def publish(self, answers: Sequence[Answer]) -> list[str]:
        """Publish every answer and wait (at most the timeout, once for all) for the broker to take them.

        Returns each answer's state: DELIVERED, REFUSED or UNCONFIRMED (see the module's docstring). For an
        error, the state is its error-topic copy's. Never raises.
        """
        if not answers:
            return []
        try:
            self._connection.wait_connected(self._timeout_s)
        except BrokerError as exc:
            logger.warning("%d answer(s) not published: %s", len(answers), exc)
            return [REFUSED] * len(answers)  # nothing was handed to paho: nothing is on its way
        is_v5 = self._connection.is_v5
        sends: list[tuple[int, str, Any, bytes]] = []  # (answer index, topic, properties, payload)
        for index, answer in enumerate(answers):
            request = answer.request
            reply = request.response_topic if request.response_topic and is_v5 else None
            if answer.is_error:
                sends.append((index, self._topics.error(request.device), None, answer.payload))
                if reply:
                    sends.append((-1, reply, response_properties(request.correlation_data), answer.payload))
            else:
                properties = response_properties(request.correlation_data) if reply else None
                sends.append((index, reply or self._topics.result(request.device), properties, answer.payload))
        window = _Window(answers, len(sends))
        for index, topic, properties, payload in sends:
            self._send(window, index, topic, properties, payload)
        if not window.all_in.wait(self._timeout_s):
            logger.warning("no PUBACK within %.0f s for some of %d answer(s)", self._timeout_s, len(answers))
        return window.close()

    def _send(self, window: _Window, index: int, topic: str, properties: Any, payload: bytes) -> None:
        def on_acked(ok: bool) -> None:
            window.record(index, ok, topic)

        try:
            self._connection.publish(topic, payload, qos=1, properties=properties, on_acked=on_acked)
        except BrokerError as exc:  # paho did not take it: no acknowledgement will ever come
            logger.warning("publishing to %s failed: %s", topic, exc)
            window.record(index, False, topic)
