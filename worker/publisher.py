"""Publishes answers at QoS 1 and waits for the broker's PUBACK: a task is acknowledged only once its answer is out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from broker.contract import FrameRequest, encode
from broker.errors import BrokerError
from broker.mqtt import MqttConnection, response_properties
from broker.topics import Topics

logger = logging.getLogger(__name__)


class PublishFailed(BrokerError):
    """The broker did not confirm an answer in time."""


class AnswerPublisher:
    def __init__(self, connection: MqttConnection, topics: Topics, *, timeout_s: float) -> None:
        self._connection = connection
        self._topics = topics
        self._timeout_s = timeout_s

    def _send(
        self,
        topic: str,
        payload: bytes,
        request: FrameRequest,
        *,
        reply: bool,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        properties = response_properties(request.correlation_data) if reply and self._connection.is_v5 else None
        outcome: list[bool] = []

        def acked(ok: bool) -> None:
            outcome.append(ok)
            if ok and on_delivered is not None:
                on_delivered()

        try:
            self._connection.wait_connected(self._timeout_s)
            info = self._connection.publish(topic, payload, qos=1, properties=properties, on_acked=acked)
            try:
                info.wait_for_publish(timeout=self._timeout_s)
            finally:
                self._connection.forget(info.mid)
        except (BrokerError, RuntimeError, ValueError) as exc:
            raise PublishFailed(f"publishing to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise PublishFailed(f"no PUBACK for {topic} within {self._timeout_s:.0f} s")
        if outcome and not outcome[0]:
            raise PublishFailed(f"the broker refused the publish to {topic}")

    def _reply_topic(self, request: FrameRequest) -> str | None:
        return request.response_topic if request.response_topic and self._connection.is_v5 else None

    def result(
        self, request: FrameRequest, message: Mapping[str, Any], on_delivered: Callable[[], None] | None = None
    ) -> None:
        """The result goes to the MQTT 5 response topic when the device gave one, else to its result topic.

        `on_delivered` runs as soon as the broker has acknowledged the answer.
        """
        payload = encode(message)
        reply = self._reply_topic(request)
        topic = reply or self._topics.result(request.device)
        self._send(topic, payload, request, reply=reply is not None, on_delivered=on_delivered)

    def error(
        self, request: FrameRequest, message: Mapping[str, Any], on_delivered: Callable[[], None] | None = None
    ) -> None:
        """Errors always go to the device's error topic, and to its response topic when it gave one."""
        payload = encode(message)
        self._send(self._topics.error(request.device), payload, request, reply=False, on_delivered=on_delivered)
        reply = self._reply_topic(request)
        if reply:
            self._send(reply, payload, request, reply=True)
