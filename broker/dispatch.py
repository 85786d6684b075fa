"""Hands admitted frames to Redis as Celery tasks, by name, with msgpack: the bridge never imports task code."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery

from broker.contract import FRAME_QUEUE, RECOGNIZE_TASK, FrameRequest

logger = logging.getLogger(__name__)

SAFE_CONTENT = ["msgpack", "json"]


def celery_transport_options(visibility_timeout_s: int) -> dict[str, Any]:
    return {"visibility_timeout": visibility_timeout_s}


def redis_client_url(celery_url: str) -> str:
    """redis-py spells a unix socket `unix://`; Celery spells it `redis+socket://`."""
    if celery_url.startswith("redis+socket://"):
        return "unix://" + celery_url[len("redis+socket://") :]
    return celery_url


class CeleryDispatcher:
    """A Celery producer that knows only the task's name and queue."""

    def __init__(self, redis_url: str, *, queue: str = FRAME_QUEUE, visibility_timeout_s: int = 300) -> None:
        self.queue = queue
        self.app = Celery("partsight-bridge", broker=redis_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="msgpack",
            accept_content=SAFE_CONTENT,
            broker_connection_retry_on_startup=True,
            broker_connection_timeout=3,
            broker_transport_options=celery_transport_options(visibility_timeout_s),
        )
        self._redis = redis.Redis.from_url(redis_client_url(redis_url), socket_timeout=2, socket_connect_timeout=2)

    def enqueue(self, request: FrameRequest) -> None:
        """Raises whatever kombu raises when Redis is away; the caller retries."""
        self.app.send_task(
            RECOGNIZE_TASK,
            kwargs=request.to_task_kwargs(),
            queue=self.queue,
            serializer="msgpack",
            retry=False,
            ignore_result=True,
        )

    def queue_length(self) -> int:
        return int(self._redis.llen(self.queue))

    def close(self) -> None:
        self._redis.close()
        self.app.close()
