"""Every case of the bad-input corpus (tests/bad_inputs.py) through the real bridge and worker: each gets its
answer (a result, or its error code on the device's error topic), the refusal is counted by the right
process, and the next good frame from the same device is answered."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import paho.mqtt.client as paho
import pytest

from broker.contract import SCHEMA_VERSION
from partsight.testing.bad_inputs import DROPPED, RESULT, Case, cases
from partsight.testing.harness import Listener, frame_properties, metric, publisher, wait_for

pytestmark = pytest.mark.integration


def device_of(case: Case) -> str:
    return case.device or f"corpus-{case.name}"


def counts(stack, corpus: list[Case]) -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    now = {}
    for case in corpus:
        if case.counted_by == "bridge" and case.expect != DROPPED:
            now[("bridge", case.expect)] = (
                metric(stack.bridge_port, "partsight_bridge_frames_rejected_total", reason=case.expect) or 0
            )
        elif case.counted_by == "worker":
            now[("worker", case.expect)] = (
                metric(stack.worker_port, "partsight_worker_errors_total", code=case.expect) or 0
            )
    return now


def test_every_corpus_case_gets_its_answer_and_the_next_frame_is_answered(stack) -> None:
    corpus = cases()
    assert len(corpus) >= 30 and len({case.name for case in corpus}) == len(corpus)
    good = next(case for case in corpus if case.name == "baseline-jpeg").payload
    before = counts(stack, corpus)
    with Listener(
        "127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/+/result", f"{stack.topics.prefix}/+/error"]
    ) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        for case in corpus:
            device = device_of(case)
            frame_id = uuid.uuid4().hex
            properties = frame_properties(frame_id)
            if "frame_id" in case.user_properties:  # the case brings its own (bad) frame id
                properties.UserProperty = list(case.user_properties.items())
            else:
                properties.UserProperty = [("frame_id", frame_id), *case.user_properties.items()]
            topic = f"{stack.topics.prefix}/{device}/{case.topic_suffix}"
            client.publish(topic, case.payload, qos=1, properties=properties).wait_for_publish(10)
            if case.expect == DROPPED:
                continue

            def answered(device: str = device) -> list:  # type: ignore[type-arg]
                return [m for m in listener.messages if m[0].startswith(f"{stack.topics.prefix}/{device}/")]

            answers = wait_for(answered, 60, f"an answer to {case.name}")
            topic, message, _ = answers[0]
            assert message["schema"] == SCHEMA_VERSION and message["device"] == device, case.name
            if case.expect == RESULT:
                assert topic == stack.topics.result(device), (case.name, message)
                assert message["status"] in ("recognized", "unknown") and message["top_k"], case.name
            else:
                assert topic == stack.topics.error(device), (case.name, message)
                assert message["error"]["code"] == case.expect, (case.name, message)
                assert message["error"]["message"], case.name
            follow_up = uuid.uuid4().hex  # the same device's next good frame
            client.publish(stack.topics.frame(device), good, qos=1, properties=frame_properties(follow_up))
            topic, message, _ = listener.wait_frame(follow_up, timeout=60)
            assert topic == stack.topics.result(device) and message["frame_id"] == follow_up, case.name

        # the same frame id from two devices: two frames, two answers
        shared = uuid.uuid4().hex
        for device in ("twin-a", "twin-b"):
            client.publish(stack.topics.frame(device), good, qos=1, properties=frame_properties(shared))
        wait_for(lambda: len(listener.for_frame(shared)) == 2, 60, "both twins answered")
        assert sorted(topic for topic, _, _ in listener.for_frame(shared)) == [
            stack.topics.result("twin-a"),
            stack.topics.result("twin-b"),
        ]
        time.sleep(0.5)
        dropped = [case for case in corpus if case.expect == DROPPED]
        for case in dropped:  # nothing subscribes to it: no answer, no crash
            assert not [m for m in listener.messages if m[0].startswith(f"{stack.topics.prefix}/{device_of(case)}/")]
        client.disconnect()

    after = counts(stack, corpus)
    expected = Counter((case.counted_by, case.expect) for case in corpus if case.counted_by and case.expect != DROPPED)
    assert {key: after[key] - before[key] for key in expected} == dict(expected)
    assert stack.bridge.alive and stack.worker.alive


def test_wildcards_cannot_name_a_device() -> None:
    """MQTT forbids wildcards in a topic name: a client cannot even publish as device 'cam+1' or 'cam#'."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    for topic in ("partsight/cam+1/frame", "partsight/cam#/frame"):
        with pytest.raises(ValueError, match="wildcard"):
            client.publish(topic, b"\xff\xd8\xff")
