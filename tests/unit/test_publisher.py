"""The answer publisher: a window's answers published together, each frame's own acknowledgement reported."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.contract import FrameRequest
from broker.errors import MqttUnavailable
from broker.topics import Topics
from worker.publisher import DELIVERED, REFUSED, UNCONFIRMED, Answer, AnswerPublisher


class Connection:
    """Acknowledges publishes as the broker would (`refuse`: topics answered with a failure reason code; `silent`:
    topics never acknowledged)."""

    is_v5 = True

    def __init__(self, *, refuse: set[str] = frozenset(), silent: set[str] = frozenset(), up: bool = True) -> None:
        self.sent: list[tuple[str, bytes, Any]] = []
        self.refuse, self.silent, self.up = refuse, silent, up
        self.held: list[Any] = []  # PUBACK callbacks of silent topics, for a late acknowledgement

    def wait_connected(self, timeout: float) -> None:
        if not self.up:
            raise MqttUnavailable("no connection")

    def publish(self, topic: str, payload: bytes, *, qos: int, properties: Any = None, on_acked: Any = None) -> int:
        self.sent.append((topic, payload, properties))
        if topic in self.silent:
            self.held.append(on_acked)
        else:
            on_acked(topic not in self.refuse)
        return len(self.sent)


def request(frame_id: str, **extra: Any) -> FrameRequest:
    return FrameRequest(device="cam", frame_id=frame_id, image=b"", received_at=1.0, **extra)


def test_each_answer_reports_its_own_acknowledgement() -> None:
    connection = Connection(refuse={"p/cam/error"})
    publisher = AnswerPublisher(connection, Topics("p"), timeout_s=0.2)  # type: ignore[arg-type]
    answers = [
        Answer(request("a"), b"{}", False),
        Answer(request("b"), b"{}", True),
        Answer(request("c"), b"{}", False),
    ]
    assert publisher.publish(answers) == [DELIVERED, REFUSED, DELIVERED]
    assert [topic for topic, _, _ in connection.sent] == ["p/cam/result", "p/cam/error", "p/cam/result"]


def test_an_answer_not_acknowledged_in_time_is_unconfirmed_and_its_late_puback_runs_its_hook() -> None:
    connection = Connection(silent={"reply/b"})
    publisher = AnswerPublisher(connection, Topics("p"), timeout_s=0.2)  # type: ignore[arg-type]
    late: list[str] = []
    answers = [
        Answer(request("a"), b"{}", False, lambda: late.append("a")),
        Answer(request("b", response_topic="reply/b"), b"{}", False, lambda: late.append("b")),
    ]
    assert publisher.publish(answers) == [DELIVERED, UNCONFIRMED]
    assert late == []
    connection.held[0](True)  # paho delivered it after a reconnect: the frame is recorded then
    assert late == ["b"]


def test_an_error_goes_to_the_error_topic_and_its_own_payload_to_the_response_topic() -> None:
    connection = Connection(refuse={"reply/b"})
    publisher = AnswerPublisher(connection, Topics("p"), timeout_s=0.2)  # type: ignore[arg-type]
    answers = [
        Answer(request("a"), b'{"frame_id":"a"}', False),
        Answer(request("b", response_topic="reply/b", correlation_data=b"7"), b'{"frame_id":"b"}', True),
    ]
    # the error topic took it: answered, although the response topic's copy was refused (that is only logged)
    assert publisher.publish(answers) == [DELIVERED, DELIVERED]
    assert [(topic, payload) for topic, payload, _ in connection.sent] == [
        ("p/cam/result", b'{"frame_id":"a"}'),
        ("p/cam/error", b'{"frame_id":"b"}'),
        ("reply/b", b'{"frame_id":"b"}'),
    ]
    assert connection.sent[2][2].CorrelationData == b"7"


def test_no_connection_publishes_nothing_and_says_so() -> None:
    publisher = AnswerPublisher(Connection(up=False), Topics("p"), timeout_s=0.2)  # type: ignore[arg-type]
    assert publisher.publish([Answer(request("a"), b"{}", False)]) == [REFUSED]


def test_callbacks_are_registered_under_the_lock_paho_handles_pubacks_under() -> None:
    """paho runs on_publish with its outgoing-message lock held; registering under it means no PUBACK can
    arrive before its callback (a paho upgrade that renames the lock fails here, not silently in production)."""
    from broker.mqtt import MqttConnection
    from broker.settings import MqttSettings

    connection = MqttConnection(MqttSettings("127.0.0.1", 1), client_id="lock-test")
    assert connection._paho_outgoing_lock is connection.client._out_message_mutex
    acked: list[bool] = []
    with connection._paho_outgoing_lock:  # paho's reentrant lock: publish() takes it again inside
        mid = connection.publish("t", b"x", qos=1, on_acked=acked.append)
    assert mid in connection._ack_callbacks  # not connected: paho keeps it for later
    connection._handle_publish(connection.client, None, mid, SimpleNamespace(is_failure=False), None)
    assert acked == [True] and mid not in connection._ack_callbacks
