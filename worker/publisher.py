"""Publishes answers at QoS 1 and waits for the broker's PUBACK: a task is acknowledged only once its answer is out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
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

    def _send(self, topic: str, payload: bytes, request: FrameRequest, *, reply: bool) -> None:
        properties = response_properties(request.correlation_data) if reply and self._connection.is_v5 else None
        try:
            self._connection.wait_connected(self._timeout_s)
            info = self._connection.publish(topic, payload, qos=1, properties=properties)
            info.wait_for_publish(timeout=self._timeout_s)
        except (BrokerError, RuntimeError, ValueError) as exc:
            raise PublishFailed(f"publishing to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise PublishFailed(f"no PUBACK for {topic} within {self._timeout_s:.0f} s")

    def _reply_topic(self, request: FrameRequest) -> str | None:
        return request.response_topic if request.response_topic and self._connection.is_v5 else None

    def result(self, request: FrameRequest, message: Mapping[str, Any]) -> None:
        """The result goes to the MQTT 5 response topic when the device gave one, else to its result topic."""
        payload = encode(message)
        reply = self._reply_topic(request)
        self._send(reply or self._topics.result(request.device), payload, request, reply=reply is not None)

    def error(self, request: FrameRequest, message: Mapping[str, Any]) -> None:
        """Errors always go to the device's error topic, and to its response topic when it gave one."""
        payload = encode(message)
        self._send(self._topics.error(request.device), payload, request, reply=False)
        reply = self._reply_topic(request)
        if reply:
            self._send(reply, payload, request, reply=True)
