"""`MqttConnection.publish` turns paho's return codes and its ValueError into PublishFailed, once, for every caller."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from paho.mqtt.enums import MQTTErrorCode

from broker.errors import BrokerError, PublishFailed
from broker.mqtt import MqttConnection
from broker.settings import MqttSettings
from broker.topics import Topics
from tests.unit.test_bridge import Dispatcher, drain, make_bridge, message
from worker.publisher import REFUSED, Answer, AnswerPublisher
from worker.runtime import publish_quietly


def connection() -> MqttConnection:
    return MqttConnection(MqttSettings("127.0.0.1", 1), client_id="publish-test")  # never started


def refusing(exc: PublishFailed) -> Any:
    def publish(*args: Any, **kwargs: Any) -> int:
        raise exc

    return publish


def test_a_message_paho_keeps_while_disconnected_returns_its_id_and_waits_for_its_puback() -> None:
    mqtt = connection()
    acked: list[bool] = []
    mid = mqtt.publish("t", b"x", qos=1, on_acked=acked.append)  # MQTT_ERR_NO_CONN: paho sends it on reconnect
    assert isinstance(mid, int) and mid in mqtt._ack_callbacks
    mqtt._handle_publish(mqtt.client, None, mid, SimpleNamespace(is_failure=False), None)
    assert acked == [True]


def test_a_message_paho_does_not_keep_raises_with_its_return_code_and_registers_no_callback() -> None:
    mqtt = connection()
    mqtt.client.max_queued_messages_set(1)
    mqtt.publish("t", b"first", qos=1)
    acked: list[bool] = []
    with pytest.raises(PublishFailed) as refused:
        mqtt.publish("t", b"second", qos=1, on_acked=acked.append)
    assert refused.value.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
    assert str(refused.value) == f"paho error {MQTTErrorCode.MQTT_ERR_QUEUE_SIZE}"
    assert len(mqtt._ack_callbacks) == 0 and acked == []


@pytest.mark.parametrize(("topic", "qos"), [("a/#", 1), ("a/+/b", 1), ("t", 3)])
def test_paho_s_value_error_becomes_publish_failed_from_it(topic: str, qos: int) -> None:
    mqtt = connection()
    with pytest.raises(PublishFailed) as invalid:
        mqtt.publish(topic, b"x", qos=qos, on_acked=lambda ok: None)
    assert invalid.value.rc is None and isinstance(invalid.value.__cause__, ValueError)
    assert str(invalid.value) == str(invalid.value.__cause__)
    assert isinstance(invalid.value, BrokerError) and not mqtt._ack_callbacks


def test_the_answer_publisher_records_a_publish_paho_refused_as_refused_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mqtt = connection()
    mqtt._connected.set()
    mqtt.publish = refusing(PublishFailed("paho error 15", rc=15))  # type: ignore[method-assign]
    publisher = AnswerPublisher(mqtt, Topics("p"), timeout_s=0.2)
    request = SimpleNamespace(device="cam", response_topic=None, correlation_data=None)
    with caplog.at_level(logging.WARNING, logger="worker.publisher"):
        states = publisher.publish([Answer(request, b"{}", False)])  # type: ignore[arg-type]
    assert states == [REFUSED]
    assert "publishing to p/cam/result failed: paho error 15" in caplog.messages


def test_the_api_answers_503_when_paho_did_not_take_the_frame() -> None:
    from api.errors import ApiError
    from api.recognize import MqttRecognizer

    recognizer = MqttRecognizer(MqttSettings("127.0.0.1", 1), topics=Topics("t"), api_id="a1", max_in_flight=4)
    recognizer.connection._connected.set()
    recognizer.connection.publish = refusing(PublishFailed("paho error 15", rc=15))  # type: ignore[method-assign]
    future = recognizer.submit("cam", b"\xff\xd8\xff")
    error = future.exception(timeout=1)
    assert isinstance(error, ApiError) and (error.status, error.code) == (503, "unavailable")
    assert str(error.message) == "publishing the frame failed: paho error 15"


def test_a_refusal_the_bridge_could_not_send_is_logged_and_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    bridge, acks, _, metrics = make_bridge(Dispatcher(), max_payload_bytes=10)
    bridge.connection.publish = refusing(PublishFailed("paho error 15", rc=15))  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="broker.bridge"):
        bridge._on_message(None, None, message("partsight/cam/frame", b"x" * 11, mid=3, frame_id="big"))
    drain(bridge)
    assert acks == [3]
    assert metrics.frames_rejected.labels(reason="payload_too_large")._value.get() == 1
    assert metrics.frames_rejected.labels(reason="internal")._value.get() == 0
    assert "the refusal on partsight/cam/error was not sent: paho error 15" in caplog.messages


def test_an_enrolment_outcome_paho_did_not_take_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    mqtt = connection()
    mqtt.publish = refusing(PublishFailed("paho error 15", rc=15))  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="worker.runtime"):
        publish_quietly(mqtt, "p/cam/result", b"{}")
    assert "the enrolment's outcome on p/cam/result was not sent: paho error 15" in caplog.messages
