"""A rolling upgrade: workers and bridges of two releases side by side, started and stopped in any order."""

from __future__ import annotations

import json
import time

import redis

from broker.contract import FRAME_QUEUE, RECOGNIZE_TASK, FrameRequest
from broker.dispatch import CeleryDispatcher
from broker.framestore import frame_key, task_reference
from partsight.testing.harness import metric, wait_for
from partsight.testing.stack import UNACKED_KEY

NEWER_TASK = "partsight.recognize_frames_v2"  # what a later release's bridge might send


def stored_frame(dispatcher: CeleryDispatcher, image: bytes, frame_id: str) -> dict[str, object]:
    """A frame stored as a bridge stores it; its reference as a task carries it."""
    request = FrameRequest(device="upgrade-cam", frame_id=frame_id, image=image, received_at=time.time())
    key = frame_key(request)
    dispatcher.store.put_many([(key, request)])
    return task_reference(key, request)


def tasks_in_redis(client: redis.Redis) -> list[dict[str, object]]:
    """Every task message still in Redis: queued, or held unacknowledged by a worker."""
    queued = [json.loads(raw) for raw in client.lrange(FRAME_QUEUE, 0, -1)]  # type: ignore[union-attr]
    held = [json.loads(raw)[0] for raw in client.hvals(UNACKED_KEY)]  # type: ignore[union-attr]
    return [message["headers"] for message in queued + held]


def test_a_task_under_a_name_the_worker_does_not_serve_goes_back_to_its_queue(own_stack, camera_photos) -> None:
    """An older worker meets a newer bridge's task: Celery's own consumer would reject it for good, and its frames
    would wait two minutes for the bridge's sweep. Here it is counted, given back, and still in Redis, whole, for
    a worker that serves it."""
    stack = own_stack
    stack.start_worker()
    redis_url = stack.env["PARTSIGHT_REDIS_URL"]
    dispatcher = CeleryDispatcher(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        image = camera_photos[0][0].read_bytes()
        sent = dispatcher.app.send_task(
            NEWER_TASK,
            kwargs={"frames": [stored_frame(dispatcher, image, "newer-1")]},
            queue=FRAME_QUEUE,
            serializer="msgpack",
            ignore_result=True,
        )
        wait_for(
            lambda: (metric(stack.worker_port, "partsight_worker_unknown_tasks_total", task=NEWER_TASK) or 0) >= 2,
            30,
            "the task given back and received again",
        )
        assert stack.worker is not None and stack.worker.stop(30) == 0
        assert sent.id in [headers["id"] for headers in tasks_in_redis(client) if headers["task"] == NEWER_TASK]
        assert stack.in_flight()["pending"] == 1  # its frame waits, stored, for that worker
    finally:
        client.close()
        dispatcher.close()


def test_a_worker_serves_the_task_older_bridges_sent(own_stack, camera_photos) -> None:
    """A bridge of the release before windows sent one frame a task under `partsight.recognize_frame`."""
    stack = own_stack
    stack.start_worker()
    dispatcher = CeleryDispatcher(stack.env["PARTSIGHT_REDIS_URL"])
    device = "upgrade-cam"
    try:
        with stack.listen(device) as listener:
            reference = stored_frame(dispatcher, camera_photos[0][0].read_bytes(), "older-1")
            dispatcher.app.send_task(
                RECOGNIZE_TASK, kwargs=reference, queue=FRAME_QUEUE, serializer="msgpack", ignore_result=True
            )
            listener.wait_frames(["older-1"], timeout=60)
        assert [doc["frame_id"] for topic, doc, _ in listener.messages if topic.endswith("/result")] == ["older-1"]
    finally:
        dispatcher.close()
