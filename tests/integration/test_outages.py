"""Broker outages: Redis or Mosquitto goes away mid-stream and comes back; every frame is still answered once."""

from __future__ import annotations

import pytest

from partsight.testing.harness import metric, publisher, readyz, wait_for
from tests.integration.test_resilience import answers_by_frame

pytestmark = pytest.mark.integration


def test_frames_sent_while_redis_is_down_are_answered_when_it_returns(own_stack, redis, camera_photos) -> None:
    stack = own_stack
    stack.start()
    device = "redis-outage-cam"
    image = camera_photos[0][0].read_bytes()
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        stack.send(client, device, ["r-before"], [image])
        listener.wait_frame("r-before")
        redis.stop()
        during = [f"r-during-{i}" for i in range(6)]
        stack.send(client, device, during, [image], interval_s=0.2)
        wait_for(
            lambda: (metric(stack.bridge_port, "partsight_bridge_enqueue_failures_total") or 0) > 0,
            20,
            "the bridge noticing Redis is away",
        )
        assert metric(stack.bridge_port, "partsight_bridge_redis_connected") == 0.0
        wait_for(lambda: readyz(stack.bridge_port)[0] == 503, 10, "the bridge reporting not ready")
        assert readyz(stack.bridge_port)[1]["checks"]["redis"] is False
        redis.start()
        wait_for(lambda: readyz(stack.bridge_port)[0] == 200, 30, "the bridge ready again")
        listener.wait_frames(during, timeout=90)
        stack.send(client, device, ["r-after"], [image])
        listener.wait_frame("r-after", timeout=60)
        stack.wait_settled()
        client.disconnect()
    counts = answers_by_frame(listener)
    assert all(counts[f] == 1 for f in ["r-before", *during, "r-after"]), counts
    assert stack.bridge.alive and stack.worker.alive


def test_frames_and_answers_survive_a_mosquitto_restart(own_stack, mqtt_server, camera_photos) -> None:
    stack = own_stack
    stack.start()
    device = "mqtt-outage-cam"
    image = camera_photos[1][0].read_bytes()
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        stack.send(client, device, ["m-before"], [image])
        listener.wait_frame("m-before")
        client.disconnect()
    mqtt_server.restart()  # persistence on: the bridge's session and its subscription survive
    wait_for(lambda: metric(stack.bridge_port, "partsight_bridge_mqtt_connected") == 1.0, 60, "bridge back")
    wait_for(lambda: metric(stack.worker_port, "partsight_worker_mqtt_connected") == 1.0, 60, "worker back")
    assert metric(stack.bridge_port, "partsight_bridge_mqtt_reconnects_total") >= 1
    assert metric(stack.worker_port, "partsight_worker_mqtt_reconnects_total") >= 1
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        after = [f"m-after-{i}" for i in range(5)]
        stack.send(client, device, after, [image])
        listener.wait_frames(after, timeout=60)
        stack.wait_settled()
        client.disconnect()
    counts = answers_by_frame(listener)
    assert all(counts[f] == 1 for f in after), counts


def test_two_bridges_in_a_share_group_split_the_load_and_answer_each_frame_once(
    own_stack, camera_photos, tmp_path
) -> None:
    from partsight.testing.harness import partsight
    from partsight.testing.servers import free_port

    stack = own_stack
    stack.env["PARTSIGHT_SHARE_GROUP"] = "bridges"
    stack.start()
    second_port = free_port()
    second_env = dict(
        stack.env,
        PARTSIGHT_BRIDGE_ID=stack.env["PARTSIGHT_BRIDGE_ID"] + "-b",
        PARTSIGHT_BRIDGE_METRICS_PORT=str(second_port),
    )
    second = partsight("bridge", second_env, tmp_path / "bridge-b.log").start()
    try:
        wait_for(lambda: metric(second_port, "partsight_bridge_mqtt_connected") == 1.0, 30, "second bridge")
        device = "shared-cam"
        frame_ids = [f"s-{i:02d}" for i in range(24)]
        with stack.listen(device) as listener:
            client = publisher("127.0.0.1", stack.mqtt_port)
            stack.send(client, device, frame_ids, [camera_photos[0][0].read_bytes()])
            listener.wait_frames(frame_ids, timeout=60)
            stack.wait_settled()
            client.disconnect()
        counts = answers_by_frame(listener)
        assert all(counts[f] == 1 for f in frame_ids), counts
        first_share = metric(stack.bridge_port, "partsight_bridge_frames_enqueued_total")
        second_share = metric(second_port, "partsight_bridge_frames_enqueued_total")
        assert first_share > 0 and second_share > 0 and first_share + second_share == len(frame_ids)
    finally:
        second.stop()


def test_a_full_queue_answers_overloaded_and_every_frame_gets_exactly_one_answer(own_stack, camera_photos) -> None:
    stack = own_stack
    stack.env["PARTSIGHT_MAX_QUEUE_LENGTH"] = "2"
    stack.start_bridge()  # no worker yet: frames pile up in Redis
    device = "busy-cam"
    frame_ids = [f"o-{i:02d}" for i in range(8)]
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        # one frame per 0.7 s: longer than the bridge's queue-depth sampling interval
        stack.send(client, device, frame_ids, [camera_photos[0][0].read_bytes()], interval_s=0.7)
        wait_for(lambda: sum(1 for t, _, _ in listener.messages if t.endswith("/error")) >= 1, 20, "overloaded")
        stack.start_worker()
        listener.wait_frames(frame_ids, timeout=60)
        stack.wait_settled()
        client.disconnect()
    counts = answers_by_frame(listener)
    assert all(counts[f] == 1 for f in frame_ids), counts
    errors = [doc for topic, doc, _ in listener.messages if topic.endswith("/error")]
    results = [doc for topic, doc, _ in listener.messages if topic.endswith("/result")]
    assert errors and all(doc["error"]["code"] == "overloaded" for doc in errors)
    assert len(results) >= 2  # the frames the queue could hold were answered once a worker came
    assert metric(stack.bridge_port, "partsight_bridge_frames_rejected_total", reason="overloaded") == len(errors)
