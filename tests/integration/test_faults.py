"""Faults while a camera streams: a worker frozen past the redelivery timeout, a worker told to stop (SIGTERM).
Afterwards every frame sent has exactly one answer."""

from __future__ import annotations

import http.client
import signal
import threading
import time

import pytest

from partsight.testing.harness import publisher, readyz, wait_for

from .test_resilience import answers_by_frame, stack_settle_s

pytestmark = pytest.mark.integration


def every_frame_answered_once(stack, listener, frame_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Waits for an answer to every frame, then long enough for any second answer, and checks there is none."""
    wait_for(lambda: set(frame_ids) <= set(answers_by_frame(listener)), 90, "every frame answered")
    time.sleep(stack_settle_s(stack))
    counts = answers_by_frame(listener)
    assert set(counts) == set(frame_ids) and max(counts.values()) == 1, {f: n for f, n in counts.items() if n > 1}


def steady_camera(stack, device: str, images: list[bytes], frame_ids: list[str], interval_s: float) -> threading.Thread:  # type: ignore[no-untyped-def]
    """Sends `frame_ids` one every `interval_s` from a thread, as a camera on a line would."""

    def run() -> None:
        client = publisher("127.0.0.1", stack.mqtt_port)
        for index, frame_id in enumerate(frame_ids):
            stack.send(client, device, [frame_id], [images[index % len(images)]])
            time.sleep(interval_s)
        time.sleep(0.5)
        client.disconnect()

    thread = threading.Thread(target=run, name=f"camera-{device}", daemon=True)
    thread.start()
    return thread


def test_a_worker_frozen_past_the_redelivery_timeout_answers_every_frame_once(own_stack, camera_photos) -> None:
    stack = own_stack
    stack.start()
    device = "freeze-cam"
    images = [path.read_bytes() for path, _ in camera_photos]
    frame_ids = [f"z-{i:03d}" for i in range(50)]
    frozen_for = float(stack.env["PARTSIGHT_VISIBILITY_TIMEOUT_S"]) + 4  # its tasks are handed out again meanwhile
    with stack.listen(device) as listener:
        camera = steady_camera(stack, device, images, frame_ids, interval_s=0.1)
        wait_for(lambda: len(answers_by_frame(listener)) >= 5, 30, "first answers")
        stack.worker.signal(signal.SIGSTOP)
        frozen_at = len(answers_by_frame(listener))
        time.sleep(frozen_for)
        assert len(answers_by_frame(listener)) <= frozen_at + 1, "answers came from a frozen worker"
        stack.worker.signal(signal.SIGCONT)
        camera.join(30)
        every_frame_answered_once(stack, listener, frame_ids)
    assert frozen_at < len(frame_ids), "the freeze came too late to test anything"


def test_sigterm_drains_the_worker_and_the_next_one_answers_the_rest(own_stack, camera_photos) -> None:
    stack = own_stack
    stack.start()
    device = "drain-cam"
    images = [path.read_bytes() for path, _ in camera_photos]
    frame_ids = [f"d-{i:03d}" for i in range(60)]
    with stack.listen(device) as listener:
        camera = steady_camera(stack, device, images, frame_ids, interval_s=0.05)
        wait_for(lambda: len(answers_by_frame(listener)) >= 10, 30, "first answers")
        stack.worker.signal(signal.SIGTERM)
        readiness = []
        while stack.worker.alive:  # while it drains, it says it is not ready
            try:
                readiness.append(readyz(stack.worker_port)[0])
            except (OSError, http.client.HTTPException):  # gone, or closed in the middle of its answer: exiting
                readiness.append(0)
            time.sleep(0.005)
        assert stack.worker.process.returncode == 0, stack.worker.log()[-2000:]
        assert 503 in readiness, readiness
        drained = len(answers_by_frame(listener))
        stack.start_worker()
        camera.join(30)
        every_frame_answered_once(stack, listener, frame_ids)
    assert drained < len(frame_ids), "the stop came too late to test anything"
