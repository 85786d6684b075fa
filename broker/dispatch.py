"""Hands admitted frames and enrolments to Redis as Celery tasks, by name, with msgpack: the bridge never imports
task code."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from celery import Celery

from broker.contract import ENROL_QUEUE, ENROL_TASK, FRAME_QUEUE, MODEL_CHANNEL, RECOGNIZE_BATCH_TASK, FrameRequest
from broker.enrol_messages import EnrolRequest
from broker.framestore import FrameStore, frame_key, task_reference
from broker.settings import DEFAULT_WINDOW_FRAMES

logger = logging.getLogger(__name__)

SAFE_CONTENT = ["msgpack", "json"]


def producer_app(name: str, redis_url: str, visibility_timeout_s: int) -> Celery:
    """A Celery app that only sends tasks by name (msgpack), as the bridge and the API do."""
    app = Celery(name, broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="msgpack",
        accept_content=SAFE_CONTENT,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options=celery_transport_options(visibility_timeout_s),
    )
    return app


def announce_current(client: redis.Redis, version: str, reason: str) -> None:
    """Tell every worker that the store's `current` now names `version` (they reload at once: MODEL_CHANNEL)."""
    client.publish(MODEL_CHANNEL, json.dumps({"version": version, "reason": reason}))


def celery_transport_options(visibility_timeout_s: int) -> dict[str, Any]:
    """Redis transport options: tasks of a dead worker are redelivered about `visibility_timeout_s` later.

    kombu sweeps for such tasks every `unacked_restore_interval * unacked_restore_throttle` seconds (100 s
    by default); the sweep is tied to the visibility timeout so recovery does not wait on it.
    """
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 3)),
        "unacked_restore_throttle": 1,
    }


def redis_client_url(celery_url: str) -> str:
    """redis-py spells a unix socket `unix://`; Celery spells it `redis+socket://`."""
    if celery_url.startswith("redis+socket://"):
        return "unix://" + celery_url[len("redis+socket://") :]
    return celery_url


class CeleryDispatcher:
    """A Celery producer that knows only the task's name and queue; frame data goes to the FrameStore."""

    def __init__(
        self,
        redis_url: str,
        *,
        queue: str = FRAME_QUEUE,
        visibility_timeout_s: int = 300,
        frame_ttl_s: int = 24 * 3600,
        redeliver_after_s: float = 120.0,
        window_frames: int = DEFAULT_WINDOW_FRAMES,
    ) -> None:
        self.queue = queue
        self.window_frames = window_frames
        self.redeliver_after_s = redeliver_after_s
        self.app = producer_app("partsight-bridge", redis_url, visibility_timeout_s)
        self._redis = redis.Redis.from_url(redis_client_url(redis_url), socket_timeout=2, socket_connect_timeout=2)
        self.store = FrameStore(self._redis, data_ttl_s=frame_ttl_s, clock=time.time)

    def enqueue_many(self, requests: list[FrameRequest]) -> None:
        """Store a window of frames in one round trip, then send one task naming them all.

        Raises what redis/kombu raise when Redis is away; callers retry the whole window (keys are stable, so a
        retry overwrites what a failed try may have stored).
        """
        frames = [(frame_key(request), request) for request in requests]
        self.store.put_many(frames)
        self._send(frames)

    def sweep_overdue(self) -> tuple[int, int]:
        """Send again the frames no worker has answered in time; returns (resent, expired)."""
        overdue: list[tuple[str, FrameRequest]] = []
        expired = 0
        for key, request in self.store.claim_overdue(self.redeliver_after_s):
            if request is None:
                expired += 1
                logger.error("frame data %s expired before any worker answered it", key)
                continue
            logger.warning(
                "frame %s from %s unanswered for %.0f s; sending it again",
                request.frame_id,
                request.device,
                self.redeliver_after_s,
            )
            overdue.append((key, request))
        for start in range(0, len(overdue), self.window_frames):  # resent in windows like any other frames
            self._send(overdue[start : start + self.window_frames])
        return len(overdue), expired

    def _send(self, frames: list[tuple[str, FrameRequest]]) -> None:
        self.app.send_task(
            RECOGNIZE_BATCH_TASK,
            kwargs={"frames": [task_reference(key, request) for key, request in frames]},
            queue=self.queue,
            serializer="msgpack",
            retry=False,
            ignore_result=True,
            # what Celery shows of the arguments in logs and events; left to itself it builds a repr of every
            # frame reference on each send (a sixth of the bridge's time in a profile)
            argsrepr="()",
            kwargsrepr=f"{{'frames': <{len(frames)} frames>}}",
        )

    def enqueue_enrolment(self, request: EnrolRequest) -> None:
        """Send one enrolment photo to the workers' enrol queue; the photo rides in the task (msgpack bytes).

        Raises what redis/kombu raise when Redis is away; the caller retries, under the same task id.
        """
        self.app.send_task(
            ENROL_TASK,
            kwargs=request.to_task_kwargs(),
            queue=ENROL_QUEUE,
            task_id=request.task_id,
            serializer="msgpack",
            retry=False,
            ignore_result=True,
            argsrepr="()",
            kwargsrepr=(
                f"{{'device': {request.device!r}, 'frame_id': {request.frame_id!r}, 'product': {request.product!r},"
                f" 'photo': <{len(request.photo)} bytes>}}"
            ),
        )

    def enrol_queue_length(self) -> int:
        """Enrolments no worker has taken yet (the Celery queue is a Redis list)."""
        length = self._redis.llen(ENROL_QUEUE)
        assert isinstance(length, int)  # a sync client answers at once; redis-py types it "int or awaitable"
        return length

    def queue_length(self) -> int:
        """Frames admitted and not yet answered: waiting in the queue or held by a worker (a task holds a window
        of frames, so the queue's own length no longer counts frames)."""
        return self.store.pending_count()

    def close(self) -> None:
        self._redis.close()
        self.app.close()
