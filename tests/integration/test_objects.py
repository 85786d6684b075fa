"""Objects end to end: frames of one physical part (the MQTT 5 user property `object`) through real Mosquitto,
Redis, bridge and Celery worker processes, one event per object on `<prefix>/<device>/event`, also when the worker
is killed in the middle of an object."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from models.extract.decode import decode_image
from partsight.testing.harness import Listener, frame_properties, metric, partsight, publisher, scrape, wait_for
from partsight.testing.servers import free_port
from partsight.testing.stack import Stack, ready
from worker.runtime import object_rule_of

pytestmark = pytest.mark.integration


def send(stack: Stack, client: paho.Client, device: str, image: bytes, name: str, *, end: bool = False) -> str:
    frame_id = uuid.uuid4().hex
    properties = frame_properties(frame_id)
    properties.UserProperty = [("frame_id", frame_id), ("object", name), *([("object_end", "1")] if end else [])]
    client.publish(stack.topics.frame(device), image, qos=1, properties=properties)
    return frame_id


def events(stack: Stack, listener: Listener, device: str, name: str) -> list[dict[str, Any]]:
    with listener._lock:
        return [
            doc for topic, doc, _ in listener.messages if topic == stack.topics.event(device) and doc["object"] == name
        ]


def one_event(stack: Stack, listener: Listener, device: str, name: str, timeout: float = 60) -> dict[str, Any]:
    """The object's event, once it came, after waiting past the gap and a sweep for a second one that must not."""
    wait_for(lambda: events(stack, listener, device, name), timeout, f"the event of object {name}")
    time.sleep(1.5)
    found = events(stack, listener, device, name)
    assert len(found) == 1, found
    return found[0]


def a_sure_photo(recognizer: Any, camera_photos: list[tuple[Path, str]]) -> tuple[bytes, str]:
    """A photo the model names right with a novelty that one, two or three copies of it pass: their object is it."""
    rule = object_rule_of(recognizer.bundle.novelty)
    images = np.stack([decode_image(path.read_bytes(), size=recognizer.input_size) for path, _ in camera_photos])
    decisions = recognizer.classify(recognizer.features(images))
    for (path, product), decision in zip(camera_photos, decisions, strict=True):
        limits = [limit for limit in (rule.threshold(m) for m in (1, 2, 3)) if limit is not None]
        if decision.product == product and all(decision.novelty < limit for limit in limits):
            return path.read_bytes(), product
    pytest.fail("no camera photo is named right under the object threshold")


def an_unlike_photo(recognizer: Any, camera_photos: list[tuple[Path, str]], image: bytes, product: str) -> bytes:
    """The photo of another product least like `image` (the lowest cosine of their features): never grouped with it."""
    others = [path for path, name in camera_photos if name != product]
    decoded = [decode_image(data, size=recognizer.input_size) for data in [image, *(p.read_bytes() for p in others)]]
    features = np.asarray(recognizer.features(np.stack(decoded)), dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return others[int(np.argmin(features[1:] @ features[0]))].read_bytes()


def test_frames_of_one_object_get_one_event_when_three_agree(
    stack: Stack, recognizer: Any, camera_photos: list[tuple[Path, str]]
) -> None:
    image, product = a_sure_photo(recognizer, camera_photos)
    device, name = "obj-cam", f"part-{uuid.uuid4().hex[:8]}"
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        sent = [send(stack, client, device, image, name) for _ in range(3)]
        event = one_event(stack, listener, device, name)
        assert (event["kind"], event["product"], event["agreeing"], event["reason"]) == ("object", product, 3, "agreed")
        assert event["frame_ids"] == sent and event["frames"] == 3 and event["device"] == device
        assert event["catalog"] is not None and event["catalog"]["product"] == product
        states = [listener.wait_frame(frame_id)[1]["object_state"] for frame_id in sent]
        # the frame that made three is answered `decided` (frames of one object may be in different windows)
        assert "decided" in states and set(states) <= {"pending", "decided"}, states
        assert {listener.wait_frame(frame_id)[1]["object"] for frame_id in sent} == {name}
        late = send(stack, client, device, image, name)  # a frame after the decision: answered, no second event
        assert listener.wait_frame(late)[1]["object_state"] == "decided"
        time.sleep(1.5)
        assert len(events(stack, listener, device, name)) == 1
        client.disconnect()
    decided = metric(stack.worker_port, "partsight_worker_objects_total", outcome="recognized", reason="agreed")
    assert decided is not None and decided >= 1
    # the decided objects' frames and seconds to their decisions, one observation each
    observed = metric(stack.worker_port, "partsight_worker_object_frames_count")
    assert observed is not None and observed >= decided
    assert (metric(stack.worker_port, "partsight_worker_object_frames_sum") or 0) >= 3 * decided
    timed = metric(stack.worker_port, "partsight_worker_object_decision_seconds_count")
    assert (
        timed is not None
        and timed >= decided
        and (metric(stack.worker_port, "partsight_worker_object_decision_seconds_sum") or 0) > 0
    )
    # the broker confirmed the events: the sweeper takes them off the outbox, so nothing is published again
    wait_for(lambda: metric(stack.worker_port, "partsight_object_events_unpublished") == 0, 10, "an empty outbox")
    assert not metric(stack.worker_port, "partsight_worker_object_events_republished_total")


def test_an_object_the_device_ends_or_leaves_is_decided_with_what_it_had(
    stack: Stack, recognizer: Any, camera_photos: list[tuple[Path, str]]
) -> None:
    image, _ = a_sure_photo(recognizer, camera_photos)
    device = "obj-cam-2"
    ended, left = f"end-{uuid.uuid4().hex[:6]}", f"left-{uuid.uuid4().hex[:6]}"
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        ended_ids = [send(stack, client, device, image, ended), send(stack, client, device, image, ended, end=True)]
        left_ids = [send(stack, client, device, image, left) for _ in range(2)]
        event = one_event(stack, listener, device, ended)
        assert event["reason"] == "object_end" and event["frame_ids"] == ended_ids and event["agreeing"] == 2
        event = one_event(stack, listener, device, left)
        assert event["reason"] == "gap" and event["frame_ids"] == left_ids
        assert 0.7 <= event["decision_seconds"] < 10  # the gap (700 ms) after its last frame, and a sweep
        bad = uuid.uuid4().hex
        properties = frame_properties(bad)
        properties.UserProperty = [("frame_id", bad), ("object", "no spaces allowed")]
        client.publish(stack.topics.frame(device), image, qos=1, properties=properties)
        topic, error, _ = listener.wait_frame(bad)
        assert topic == stack.topics.error(device) and error["error"]["code"] == "bad_metadata", error
        client.disconnect()


def test_an_object_whose_worker_is_killed_midway_gets_exactly_one_event(
    own_stack: Stack, recognizer: Any, camera_photos: list[tuple[Path, str]]
) -> None:
    image, product = a_sure_photo(recognizer, camera_photos)
    own_stack.start()
    device = "obj-cam-3"
    ended, left = f"kill-end-{uuid.uuid4().hex[:6]}", f"kill-left-{uuid.uuid4().hex[:6]}"
    with own_stack.listen(device) as listener:
        client = publisher("127.0.0.1", own_stack.mqtt_port)
        first = [send(own_stack, client, device, image, name) for name in (ended, left)]
        listener.wait_frames(first, timeout=60)
        assert own_stack.worker is not None
        own_stack.worker.kill()  # in the middle of both objects: their state is in Redis, not in the worker
        last = send(own_stack, client, device, image, ended, end=True)
        own_stack.start_worker()
        event = one_event(own_stack, listener, device, ended, timeout=120)
        assert (
            event["frame_ids"] == [first[0], last] and event["product"] == product and event["reason"] == "object_end"
        )
        event = one_event(own_stack, listener, device, left, timeout=60)
        assert event["frame_ids"] == [first[1]] and event["reason"] == "gap"
        client.disconnect()


def test_frames_that_name_no_object_are_grouped_by_the_worker(
    stack: Stack, recognizer: Any, camera_photos: list[tuple[Path, str]]
) -> None:
    image, product = a_sure_photo(recognizer, camera_photos)
    device = "auto-cam"
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        sent = [uuid.uuid4().hex for _ in range(3)]
        stack.send(client, device, sent, [image])  # one part, three frames, no `object`: alike and close together
        names = {listener.wait_frame(frame_id)[1]["object"] for frame_id in sent}
        assert len(names) == 1 and next(iter(names)).startswith("auto-"), names
        name = next(iter(names))
        event = one_event(stack, listener, device, name)
        assert event["frame_ids"] == sent and event["product"] == product and event["reason"] == "agreed"
        time.sleep(1.0)  # past the gap: the next frame is the next part
        alone = uuid.uuid4().hex
        stack.send(client, device, [alone], [image])
        other = listener.wait_frame(alone)[1]["object"]
        assert other != name and other.startswith("auto-")
        event = one_event(stack, listener, device, other)
        assert event["frame_ids"] == [alone] and event["reason"] == "gap" and event["frames"] == 1
        # a camera that shows each part once: a part's object is decided when the next part's frame comes
        parts = [uuid.uuid4().hex, uuid.uuid4().hex]
        stack.send(client, device, parts[:1], [image])
        first = listener.wait_frame(parts[0])[1]["object"]  # answered (so the next part comes after it), in its gap
        stack.send(client, device, parts[1:], [an_unlike_photo(recognizer, camera_photos, image, product)])
        second = listener.wait_frame(parts[1])[1]["object"]
        assert first != second
        event = one_event(stack, listener, device, first)
        assert event["frame_ids"] == parts[:1] and event["reason"] == "next_object" and event["product"] == product
        assert one_event(stack, listener, device, second)["reason"] == "gap"  # no part after it: its gap ends it
        client.disconnect()


def results_published(port: int) -> float:
    """The results a worker published, of every status and category."""
    return sum(value for (name, _), value in scrape(port).items() if name == "partsight_worker_results_total")


def test_objects_through_two_bridges_and_two_workers_get_one_event_each(
    own_stack: Stack, recognizer: Any, camera_photos: list[tuple[Path, str]]
) -> None:
    """Bridges in a share group split a device's frames between them, and two workers answer them: an object's
    frames cross both, and its state in Redis still makes exactly one event of the frames the device sent."""
    image, product = a_sure_photo(recognizer, camera_photos)
    stack = own_stack
    # a task per frame, and one at a time per worker: neither worker can take every frame in one go
    stack.env.update(PARTSIGHT_SHARE_GROUP="bridges", PARTSIGHT_WINDOW_FRAMES="1", PARTSIGHT_WORKER_CONCURRENCY="1")
    stack.start()
    bridge_port, worker_port = free_port(), free_port()
    env = dict(stack.env, PARTSIGHT_BRIDGE_ID=stack.env["PARTSIGHT_BRIDGE_ID"] + "-b")
    second_bridge = partsight("bridge", dict(env, PARTSIGHT_BRIDGE_METRICS_PORT=str(bridge_port)), stack.logs / "b.log")
    worker_env = dict(stack.env, PARTSIGHT_WORKER_ID="second", PARTSIGHT_WORKER_METRICS_PORT=str(worker_port))
    second_worker = partsight("worker", worker_env, stack.logs / "worker-second.log")
    second_bridge.start()
    second_worker.start()
    try:
        wait_for(lambda: metric(bridge_port, "partsight_bridge_mqtt_connected") == 1.0, 30, "second bridge")
        wait_for(lambda: ready(worker_port), 90, "second worker")
        device, names = "obj-shared", [f"shared-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
        sent: dict[str, list[str]] = {name: [] for name in names}
        with stack.listen(device) as listener:
            client = publisher("127.0.0.1", stack.mqtt_port)
            for index in range(4):  # the four objects' frames interleaved; each one's fourth frame ends it
                for name in names:
                    sent[name].append(send(stack, client, device, image, name, end=index == 3))
            listener.wait_frames([f for frames in sent.values() for f in frames], timeout=120)
            found = {name: one_event(stack, listener, device, name) for name in names}
            stack.wait_settled()
            assert all(len(events(stack, listener, device, name)) == 1 for name in names)  # still one each
            client.disconnect()
        for name, event in found.items():
            assert event["product"] == product and event["reason"] in ("agreed", "object_end"), event
            assert set(event["frame_ids"]) <= set(sent[name]) and len(event["frame_ids"]) >= 3, (event, sent[name])
        enqueued = [
            metric(port, "partsight_bridge_frames_enqueued_total") or 0 for port in (stack.bridge_port, bridge_port)
        ]
        assert all(count > 0 for count in enqueued) and sum(enqueued) == 16, enqueued  # both bridges took frames
        answered = [results_published(port) for port in (stack.worker_port, worker_port)]
        assert all(count > 0 for count in answered) and sum(answered) == 16, answered  # both workers answered
    finally:
        second_bridge.stop()
        second_worker.stop()
