"""Several frames per task: windows at the bridge, a worker that cannot serve taking no frame, a camera that
restarts its frame counter, and the transport-only engine, all through the real bridge, worker and servers."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from partsight.testing.harness import metric, partsight, publisher, wait_for
from tests.integration.test_resilience import answers_by_frame

pytestmark = pytest.mark.integration


def photo(seed: int) -> bytes:
    """A small JPEG whose bytes differ for every seed."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 37 % 256, seed * 91 % 256, 120)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_burst_shares_windows_and_each_frame_is_answered_once(own_stack, camera_photos) -> None:
    stack = own_stack
    stack.start()
    device = "burst-cam"
    images = [path.read_bytes() for path, _ in camera_photos]
    frame_ids = [f"w-{i:03d}" for i in range(60)]
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        stack.send(client, device, frame_ids, images)  # as fast as the camera can publish
        listener.wait_frames(frame_ids, timeout=120)
        stack.wait_settled()
        client.disconnect()
    counts = answers_by_frame(listener)
    assert all(counts[f] == 1 for f in frame_ids), counts
    windows = metric(stack.bridge_port, "partsight_bridge_window_frames_count")
    frames = metric(stack.bridge_port, "partsight_bridge_window_frames_sum")
    assert frames == len(frame_ids) and windows is not None and windows < frames, (windows, frames)
    results = [doc for topic, doc, _ in listener.messages if topic.endswith("/result")]
    assert {doc["frame_id"] for doc in results} == set(frame_ids)  # results, each for its own frame


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"PARTSIGHT_MODEL_DIR": "/nonexistent/models-store"}, "/nonexistent/models-store"),
        ({"PARTSIGHT_ENGINE": "tensorrt"}, "PARTSIGHT_ENGINE must be one of"),
    ],
    ids=["missing-model-directory", "unknown-engine"],
)
def test_a_worker_that_cannot_serve_exits_and_takes_no_frame(own_stack, camera_photos, broken, reason) -> None:
    """Frames wait in the queue while a misconfigured worker starts; it exits non-zero with the reason and takes
    none of them; a healthy worker then answers every one."""
    stack = own_stack
    stack.start_bridge()
    device = "patient-cam"
    frame_ids = [f"b-{i:02d}" for i in range(12)]
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        stack.send(client, device, frame_ids, [camera_photos[0][0].read_bytes()])
        wait_for(
            lambda: metric(stack.bridge_port, "partsight_bridge_frames_enqueued_total") == len(frame_ids),
            30,
            "the frames stored and their tasks sent",
        )
        waiting = stack.in_flight()
        bad = partsight("worker", {**stack.env, **broken}, stack.logs / "broken-worker.log").start()
        assert bad.process is not None
        code = bad.process.wait(90)
        assert code != 0, bad.log()
        assert reason in bad.log(), bad.log()
        assert "Address already in use" not in bad.log()
        assert stack.in_flight() == waiting, "the broken worker took frames"
        assert listener.answers() == [], "a broken worker answered"
        stack.start_worker()
        listener.wait_frames(frame_ids, timeout=90)
        stack.wait_settled()
        client.disconnect()
    counts = answers_by_frame(listener)
    assert all(counts[f] == 1 for f in frame_ids), counts
    assert all(doc.get("status") for topic, doc, _ in listener.messages if topic.endswith("/result"))


def test_a_camera_that_restarts_its_frame_counter_is_answered(own_stack) -> None:
    """A real device counts 0, 1, 2..., restarts, and counts from 0 again with new photos: every new photo is
    answered; the same photo sent again under its id is a repeat, skipped and counted."""
    stack = own_stack
    stack.start()
    device = "rebooting-cam"
    frame_ids = [f"{i:06d}" for i in range(5)]
    before, after = [photo(i) for i in range(5)], [photo(100 + i) for i in range(5)]
    with stack.listen(device) as listener:
        camera = publisher("127.0.0.1", stack.mqtt_port)
        stack.send(camera, device, frame_ids, before)
        wait_for(lambda: len(listener.answers()) == 5, 60, "answers before the restart")
        camera.disconnect()
        camera.loop_stop()
        camera = publisher("127.0.0.1", stack.mqtt_port)  # the device came back and counts from 0 again
        stack.send(camera, device, frame_ids, after)
        wait_for(lambda: len(listener.answers()) == 10, 60, "answers after the restart")
        stack.send(camera, device, frame_ids[:2], after[:2])  # the same photos again: repeats
        wait_for(
            lambda: (metric(stack.worker_port, "partsight_worker_duplicate_deliveries_total") or 0) >= 2,
            60,
            "the repeats skipped",
        )
        stack.wait_settled()
        camera.disconnect()
    counts = answers_by_frame(listener)
    assert all(counts[f] == 2 for f in frame_ids), counts  # once before the restart, once after
    assert len(listener.answers()) == 10


def test_the_transport_only_engine_answers_unknown_without_a_model(own_stack) -> None:
    stack = own_stack
    stack.env.update(PARTSIGHT_ENGINE="none", PARTSIGHT_MODEL_DIR="/nonexistent/no-model-needed")
    stack.start()
    device = "transport-cam"
    frame_ids = [f"t-{i:02d}" for i in range(10)]
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        stack.send(client, device, frame_ids, [b"\xff\xd8\xff not even decoded", photo(1)])
        listener.wait_frames(frame_ids, timeout=60)
        stack.wait_settled()
        client.disconnect()
    results = [doc for topic, doc, _ in listener.messages if topic.endswith("/result")]
    assert sorted(doc["frame_id"] for doc in results) == frame_ids
    assert all(doc["status"] == "unknown" and doc["model"]["name"] == "transport-only" for doc in results)
    assert "PARTSIGHT_ENGINE=none" in stack.worker.log()
