"""Celery's consumer, except for a task whose name this worker does not know: given back, never dropped.

A rolling upgrade has workers and bridges of two releases side by side, in any order: an older worker may receive
a task a newer bridge sends under a name it does not know. Celery's own consumer logs such a task and rejects it
for good, and its frames then wait for the bridge's sweep (PARTSIGHT_REDELIVER_AFTER_S, two minutes by default)
with nothing said to the device meanwhile. This one holds it unacknowledged for `UNKNOWN_TASK_HOLD_S`, counts it,
then puts it back at the head of its queue, where a worker that knows the name takes it; the hold keeps a worker
that is alone with such tasks from spinning on them. (The other way round, a newer worker serves every task name
the older bridges send: worker.tasks.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

logger = logging.getLogger(__name__)

UNKNOWN_TASK_HOLD_S = 1.0
UNKNOWN_TASK_HOOK = "partsight_on_unknown_task"  # the app attribute the worker's runtime sets: counts by name


class RequeueingConsumer(Consumer):  # type: ignore[misc]  # celery ships no type hints
    hold_s = UNKNOWN_TASK_HOLD_S

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = str((message.headers or {}).get("task") or "?")
        logger.warning(
            "a task named %r is not one this worker serves (a newer bridge during an upgrade?): given back to its "
            "queue in %.0f s for a worker that serves it",
            name,
            self.hold_s,
        )
        count: Callable[[str], None] | None = getattr(self.app, UNKNOWN_TASK_HOOK, None)
        if count is not None:
            count(name)
        self.timer.call_after(self.hold_s, self._give_back, (message, name))

    def _give_back(self, message: Any, name: str) -> None:
        try:
            message.reject(requeue=True)
        except self.connection_errors as exc:  # the broker is away: its visibility timeout brings the task back
            logger.warning("task %r could not be given back now (%s); Redis restores it later", name, exc)
