from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from broker.bridge import Bridge
from broker.contract import FrameRequest
from broker.enrol_messages import EnrolRequest
from broker.metrics import BridgeMetrics
from broker.settings import BridgeSettings, MqttSettings


class Dispatcher:
    redeliver_after_s = 60.0

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.enqueued: list[FrameRequest] = []
        self.windows: list[list[str]] = []
        self.enrolments: list[EnrolRequest] = []
        self.sent: list[str] = []  # what reached "Redis", in order: frame windows and enrolments
        self.enrol_waiting = 0
        self.done = threading.Event()

    def enqueue_many(self, requests: list[FrameRequest]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis away")
        self.enqueued.extend(requests)
        self.windows.append([request.frame_id for request in requests])
        self.sent.extend(request.frame_id for request in requests)
        self.done.set()

    def enqueue_enrolment(self, request: EnrolRequest) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis away")
        self.enrolments.append(request)
        self.sent.append(request.frame_id)
        self.done.set()

    def queue_length(self) -> int:
        return 0

    def enrol_queue_length(self) -> int:
        return self.enrol_waiting

    def sweep_overdue(self) -> tuple[int, int]:
        return 0, 0


def make_bridge(dispatcher: Dispatcher, **settings: Any) -> tuple[Bridge, list[Any], list[Any], BridgeMetrics]:
    metrics = BridgeMetrics(CollectorRegistry())
    bridge = Bridge(
        BridgeSettings(mqtt=MqttSettings("127.0.0.1", 1), **settings),
        dispatcher=dispatcher,
        metrics=metrics,
        clock=lambda: 1000.0,
    )
    acks: list[Any] = []
    published: list[Any] = []
    bridge.connection.client.ack = lambda mid, qos: acks.append(mid)  # type: ignore[method-assign]
    bridge.connection.publish = lambda topic, payload, **kw: published.append((topic, json.loads(payload)))  # type: ignore[method-assign]
    bridge._accepting.set()
    return bridge, acks, published, metrics


def message(topic: str, payload: bytes, mid: int = 1, **user: str) -> Any:
    props = SimpleNamespace(UserProperty=list(user.items()), ResponseTopic=None, CorrelationData=None)
    return SimpleNamespace(topic=topic, payload=payload, mid=mid, qos=1, properties=props)


def test_a_frame_is_acknowledged_only_after_it_is_enqueued_even_through_redis_outages() -> None:
    dispatcher = Dispatcher(failures=2)
    bridge, acks, _, metrics = make_bridge(dispatcher)
    worker = threading.Thread(target=bridge._dispatch_loop, daemon=True)
    worker.start()
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xffdata", mid=7, frame_id="f"))
    assert dispatcher.done.wait(5)
    bridge._pending.put(None)
    worker.join(5)
    assert acks == [7] and dispatcher.enqueued[0].frame_id == "f"
    assert metrics.enqueue_failures._value.get() == 2 and metrics.frames_enqueued._value.get() == 1


def drain(bridge: Bridge) -> None:
    """Run the dispatcher over everything queued so far, as its thread would."""
    bridge._pending.put(None)
    bridge._dispatch_loop()


def test_waiting_frames_share_a_window_of_at_most_window_frames() -> None:
    dispatcher = Dispatcher()
    bridge, acks, _, metrics = make_bridge(dispatcher, window_frames=3, window_ms=60_000)
    for mid in range(1, 8):
        bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=mid, frame_id=f"f{mid}"))
    drain(bridge)
    assert dispatcher.windows == [["f1", "f2", "f3"], ["f4", "f5", "f6"], ["f7"]]
    assert acks == list(range(1, 8)) and metrics.frames_enqueued._value.get() == 7
    assert metrics.window_size._sum.get() == 7 and bridge.metrics.pending._value.get() == 0


def test_a_refused_frame_inside_a_window_is_acknowledged_in_its_place() -> None:
    dispatcher = Dispatcher()
    bridge, acks, published, _ = make_bridge(dispatcher, max_payload_bytes=10)
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=1, frame_id="a"))
    bridge._on_message(None, None, message("partsight/cam/frame", b"x" * 11, mid=2, frame_id="big"))
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=3, frame_id="b"))
    drain(bridge)
    assert dispatcher.windows == [["a", "b"]] and acks == [1, 2, 3]
    assert [doc["frame_id"] for _, doc in published] == ["big"]


def test_a_lone_frame_is_sent_at_once_not_held_for_the_window() -> None:
    """Nothing else waiting: the window closes on its one frame, whatever PARTSIGHT_WINDOW_MS says."""
    dispatcher = Dispatcher()
    bridge, acks, _, _ = make_bridge(dispatcher, window_frames=32, window_ms=600_000)
    worker = threading.Thread(target=bridge._dispatch_loop, daemon=True)
    worker.start()
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=5, frame_id="alone"))
    assert dispatcher.done.wait(30), "a lone frame was held back for the window"
    bridge._pending.put(None)
    worker.join(5)
    assert dispatcher.windows == [["alone"]] and acks == [5]


def test_acknowledgements_leave_in_arrival_order_accepted_or_refused() -> None:
    bridge, acks, _, _ = make_bridge(Dispatcher(failures=1), max_payload_bytes=10)
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=1))  # slow: Redis retry
    bridge._on_message(None, None, message("partsight/cam/frame", b"x" * 11, mid=2))  # refused at once
    bridge._on_message(None, None, message("partsight/a/b/frame", b"\xff\xd8\xff", mid=3))  # unknown topic
    drain(bridge)
    assert acks == [1, 2, 3]


def test_rejections_go_to_the_device_error_topic_and_are_acknowledged() -> None:
    bridge, acks, published, metrics = make_bridge(Dispatcher(), max_payload_bytes=10)
    bridge._on_message(None, None, message("partsight/cam/frame", b"x" * 11, mid=3, frame_id="big"))
    drain(bridge)
    assert acks == [3]
    topic, error = published[0]
    assert (
        topic == "partsight/cam/error" and error["error"]["code"] == "payload_too_large" and error["frame_id"] == "big"
    )
    assert metrics.frames_rejected.labels(reason="payload_too_large")._value.get() == 1


def test_unknown_topics_are_counted_and_dropped() -> None:
    bridge, acks, published, metrics = make_bridge(Dispatcher())
    bridge._on_message(None, None, message("partsight/a/b/frame", b"\xff\xd8\xff", mid=4))
    drain(bridge)
    assert acks == [4] and published == []
    assert metrics.frames_rejected.labels(reason="unknown_topic")._value.get() == 1


def test_a_full_queue_answers_overloaded() -> None:
    bridge, _, published, _ = make_bridge(Dispatcher(), max_queue_length=5)
    bridge._queue_depth = 5
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", frame_id="f"))
    assert published[0][1]["error"]["code"] == "overloaded"


def test_the_bound_holds_between_depth_samples() -> None:
    """A burst faster than the depth is sampled: frames admitted since the last sample count against the bound."""
    bridge, _, published, _ = make_bridge(Dispatcher(), max_queue_length=5)
    bridge._queue_depth = 2
    for index in range(10):
        bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", frame_id=f"f{index}"))
    refused = [doc["frame_id"] for _, doc in published if doc["error"]["code"] == "overloaded"]
    assert refused == [f"f{index}" for index in range(3, 10)]  # 2 waiting + 3 admitted = the bound of 5
    # the next sample finds what is really waiting (here: the workers took everything) and lets frames in
    bridge._pending = type(bridge._pending)()
    bridge.sample_queue_depth()
    published.clear()
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", frame_id="after"))
    assert published == [] and bridge._pending.qsize() == 1


def test_frames_arriving_while_draining_are_left_for_the_broker_to_redeliver() -> None:
    bridge, acks, published, _ = make_bridge(Dispatcher())
    bridge._accepting.clear()
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=9))
    assert acks == [] and published == [] and bridge._pending.empty()


def test_each_device_gets_its_last_frame_time_and_the_label_stays_bounded() -> None:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    metrics = BridgeMetrics(registry, max_tracked_devices=2)
    bridge = Bridge(BridgeSettings(mqtt=MqttSettings("127.0.0.1", 1)), dispatcher=Dispatcher(), metrics=metrics)
    bridge.connection.client.ack = lambda mid, qos: None  # type: ignore[method-assign]
    bridge._accepting.set()
    for mid, device in enumerate(["cam-1", "cam-2", "cam-1", "cam-3", "cam-4"], start=1):
        bridge._on_message(None, None, message(f"partsight/{device}/frame", b"\xff\xd8\xff", mid=mid))
    bridge._on_message(None, None, message("partsight/a/b/frame", b"\xff\xd8\xff", mid=9))  # unknown topic: no device
    drain(bridge)
    text = generate_latest(registry).decode()
    tracked = [
        line for line in text.splitlines() if line.startswith("partsight_bridge_device_last_frame_timestamp_seconds{")
    ]
    assert sorted(line.split('"')[1] for line in tracked) == ["cam-1", "cam-2"]
    assert all(float(line.split()[-1]) > 1.7e9 for line in tracked)  # wall-clock Unix time
    assert metrics.untracked_device_frames._value.get() == 2


def test_a_window_closes_at_its_byte_limit() -> None:
    dispatcher = Dispatcher()
    bridge, acks, _, _ = make_bridge(dispatcher, window_frames=32, window_bytes=10, window_ms=60_000)
    for mid in range(1, 5):
        bridge._on_message(
            None, None, message("partsight/cam/frame", b"\xff\xd8\xff" + b"1234", mid=mid, frame_id=f"f{mid}")
        )
    drain(bridge)
    assert dispatcher.windows == [["f1", "f2"], ["f3", "f4"]] and acks == [1, 2, 3, 4]  # 7 + 7 bytes reach 10


def test_frames_in_the_window_being_written_count_against_the_bound() -> None:
    dispatcher = Dispatcher()
    bridge, _, _, _ = make_bridge(dispatcher, window_frames=2)
    for mid in range(1, 4):
        bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=mid, frame_id=f"f{mid}"))
    window, _ = bridge._next_window()
    assert len(window) == 2
    bridge.sample_queue_depth()  # Redis holds none of them yet: one in the local queue, two in the window
    assert bridge._queue_depth == 3


def test_with_a_backlog_a_window_waits_to_fill_without_one_it_leaves_at_once() -> None:
    def window_after_a_late_burst(backlog: int) -> int:
        bridge, _, _, _ = make_bridge(Dispatcher(), window_frames=3, window_ms=20_000)
        bridge._queue_depth = backlog
        bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=1, frame_id="now"))

        def late() -> None:
            time.sleep(0.1)
            for mid in (2, 3):
                bridge._on_message(
                    None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=mid, frame_id=f"l{mid}")
                )

        threading.Thread(target=late, daemon=True).start()
        window, _ = bridge._next_window()
        return len(window)

    assert window_after_a_late_burst(backlog=0) == 1  # low load: no frame is held back
    assert window_after_a_late_burst(backlog=3) == 3  # a full window waits already: this one fills first


def enrolment(mid: int, product: str | None = "bolt-m8", payload: bytes = b"\xff\xd8\xff", **user: str) -> Any:
    if product is not None:
        user["product"] = product
    return message("partsight/cam/enrol", payload, mid=mid, **user)


def test_an_enrolment_is_acknowledged_only_after_redis_took_its_task_even_through_outages() -> None:
    dispatcher = Dispatcher(failures=2)
    bridge, acks, published, metrics = make_bridge(dispatcher)
    catalog = json.dumps({"name": "Hex bolt M8", "category": "fasteners"})
    worker = threading.Thread(target=bridge._dispatch_loop, daemon=True)
    worker.start()
    bridge._on_message(None, None, enrolment(8, frame_id="e-1", catalog=catalog))
    assert dispatcher.done.wait(5)
    bridge._pending.put(None)
    worker.join(5)
    assert acks == [8] and published == []
    (sent,) = dispatcher.enrolments
    assert sent.to_task_kwargs() == {
        "device": "cam",
        "frame_id": "e-1",
        "product": "bolt-m8",
        "catalog": {"product": "bolt-m8", "name": "Hex bolt M8", "category": "fasteners"},
        "photo": b"\xff\xd8\xff",
        "received_at": 1000.0,
    }
    assert metrics.enqueue_failures._value.get() == 2
    assert metrics.enrolments.labels(outcome="enqueued")._value.get() == 1
    assert metrics.frames_received._value.get() == 0 and metrics.frames_enqueued._value.get() == 0  # not a frame


def test_an_enrolment_closes_its_window_and_acknowledgements_keep_arrival_order() -> None:
    dispatcher = Dispatcher()
    bridge, acks, _, _ = make_bridge(dispatcher, window_frames=8, window_ms=60_000)
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=1, frame_id="f1"))
    bridge._on_message(None, None, enrolment(2, frame_id="e"))
    bridge._on_message(None, None, enrolment(3, product=None, frame_id="refused"))  # no product: refused at once
    bridge._on_message(None, None, message("partsight/cam/frame", b"\xff\xd8\xff", mid=4, frame_id="f2"))
    drain(bridge)
    assert dispatcher.windows == [["f1"], ["f2"]] and dispatcher.sent == ["f1", "e", "f2"]
    assert acks == [1, 2, 3, 4]


def test_a_refused_enrolment_is_answered_on_the_error_topic_counted_and_acknowledged() -> None:
    bridge, acks, published, metrics = make_bridge(Dispatcher(), max_payload_bytes=10)
    bridge._on_message(None, None, enrolment(1, product="../etc", frame_id="e-1"))
    bridge._on_message(None, None, enrolment(2, payload=b"x" * 11, frame_id="e-2"))
    bridge._on_message(None, None, enrolment(3, catalog="{not json", frame_id="e-3"))
    bridge._on_message(None, None, enrolment(4, product=None))  # what an MQTT 3.1.1 client sends: no properties
    drain(bridge)
    assert acks == [1, 2, 3, 4]
    assert [topic for topic, _ in published] == ["partsight/cam/error"] * 4
    answers = [
        (doc["type"], doc["frame_id"], doc["product"], doc["state"], doc["error"]["code"]) for _, doc in published
    ]
    assert answers[:3] == [
        ("enrolment", "e-1", None, "failed", "bad_enrolment"),
        ("enrolment", "e-2", "bolt-m8", "failed", "payload_too_large"),
        ("enrolment", "e-3", "bolt-m8", "failed", "bad_enrolment"),
    ]
    assert answers[3][4] == "bad_enrolment" and "MQTT 5" in published[3][1]["error"]["message"]
    assert metrics.enrolments.labels(outcome="bad_enrolment")._value.get() == 3
    assert metrics.enrolments.labels(outcome="payload_too_large")._value.get() == 1
    assert metrics.frames_rejected.labels(reason="payload_too_large")._value.get() == 0  # frames' count untouched


def test_enrolments_have_their_own_bound_and_answer_overloaded_beyond_it() -> None:
    dispatcher = Dispatcher()
    bridge, _, published, metrics = make_bridge(dispatcher, max_enrol_queue_length=3)
    dispatcher.enrol_waiting = 2
    bridge.sample_enrol_depth()
    for mid in (1, 2):
        bridge._on_message(None, None, enrolment(mid, frame_id=f"e{mid}"))
    assert [doc["frame_id"] for _, doc in published] == ["e2"] and published[0][1]["error"]["code"] == "overloaded"
    drain(bridge)  # e1 reaches Redis: still counted until a sample shows the workers took it
    bridge._on_message(None, None, enrolment(3, frame_id="e3"))
    assert [doc["frame_id"] for _, doc in published] == ["e2", "e3"]
    dispatcher.enrol_waiting = 0
    bridge.sample_enrol_depth()
    bridge._on_message(None, None, enrolment(4, frame_id="e4"))
    assert len(published) == 2 and metrics.enrolments.labels(outcome="overloaded")._value.get() == 2


def test_enrolments_arriving_while_draining_are_left_for_the_broker() -> None:
    bridge, acks, published, _ = make_bridge(Dispatcher())
    bridge._accepting.clear()
    bridge._on_message(None, None, enrolment(9))
    assert acks == [] and published == [] and bridge._pending.empty()


def test_a_failure_handling_an_enrolment_is_counted_as_one_and_acknowledged() -> None:
    bridge, acks, _, metrics = make_bridge(Dispatcher())

    def broken(inbound: Any, mid: int, qos: int) -> None:
        raise RuntimeError("bug")

    bridge._handle_enrolment = broken  # type: ignore[method-assign]
    bridge._on_message(None, None, enrolment(5))
    drain(bridge)
    assert acks == [5] and metrics.enrolments.labels(outcome="internal")._value.get() == 1
    assert metrics.frames_rejected.labels(reason="internal")._value.get() == 0


def test_the_bridge_subscribes_to_frames_and_enrolments_in_its_share_group() -> None:
    bridge, _, _, _ = make_bridge(Dispatcher(), share_group="bridges")
    bridge._threads = []
    bridge.connection.start = lambda: None  # type: ignore[method-assign]
    bridge.start()
    assert [topic for topic, _ in bridge.connection._subscriptions] == [
        "$share/bridges/partsight/+/frame",
        "$share/bridges/partsight/+/enrol",
    ]
