"""The API's Redis side: enrolments sent to the workers as Celery tasks by name, and `current` moves announced.

Like the bridge's producer (broker.dispatch): msgpack, the same transport options, never the task's code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from broker.contract import ENROL_QUEUE, ENROL_TASK, MODEL_CHANNEL
from broker.dispatch import announce_current, producer_app, redis_client_url
from broker.line_rankers import ranker_states

logger = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def enrol(self, enrolment: str) -> None:
        """Queue a stored enrolment for the workers; raises when Redis does not take it."""

    def announce(self, version: str, reason: str) -> bool:
        """Tell the workers `current` moved; False when Redis is away (they still find it at their next poll)."""

    def ping(self) -> bool:
        """Whether Redis answers."""

    def line_rankers(
        self, lines: Sequence[tuple[str, str]], version: str | None
    ) -> dict[str, list[dict[str, Any]]] | None:
        """Each line's workers' last tries at its ranker on `version` (broker.line_rankers), by line; None when Redis
        is away."""

    def close(self) -> None: ...


class RedisDispatcher:
    def __init__(self, redis_url: str, *, visibility_timeout_s: int) -> None:
        self.app = producer_app("partsight-api", redis_url, visibility_timeout_s)
        self._redis = redis.Redis.from_url(redis_client_url(redis_url), socket_timeout=2, socket_connect_timeout=2)
        self._send_lock = threading.Lock()  # one producer connection, shared by the HTTP server's threads

    def enrol(self, enrolment: str) -> None:
        with self._send_lock:
            self.app.send_task(
                ENROL_TASK,
                kwargs={"enrolment": enrolment},
                queue=ENROL_QUEUE,
                serializer="msgpack",
                retry=False,
                ignore_result=True,
            )

    def announce(self, version: str, reason: str) -> bool:
        try:
            announce_current(self._redis, version, reason)
        except redis.RedisError as exc:
            logger.warning(
                "could not announce version %s on %s: %s; workers find it at their next poll",
                version,
                MODEL_CHANNEL,
                exc,
            )
            return False
        return True

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def line_rankers(
        self, lines: Sequence[tuple[str, str]], version: str | None
    ) -> dict[str, list[dict[str, Any]]] | None:
        try:
            return ranker_states(self._redis, lines, version=version)
        except redis.RedisError as exc:
            logger.warning("the lines' ranker states could not be read (%s)", exc)
            return None

    def close(self) -> None:
        self._redis.close()
        self.app.close()
