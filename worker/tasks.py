"""The Celery task: thin, named, acknowledged late; all the work is in FramePipeline."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from redis.exceptions import RedisError

from broker.contract import RECOGNIZE_TASK
from worker.pipeline import FrameBusy
from worker.publisher import PublishFailed
from worker.runtime import RuntimeHolder

logger = logging.getLogger(__name__)

RETRY_DELAY_S = 2


def register(app: Celery, holder: RuntimeHolder) -> Task:
    @app.task(
        name=RECOGNIZE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, ignore_result=True
    )
    def recognize_frame(self: Task, **kwargs: Any) -> str:
        runtime = holder.get()
        if not isinstance(kwargs.get("device"), str) or not isinstance(kwargs.get("frame_id"), str):
            runtime.metrics.malformed_tasks.inc()
            logger.error("dropping a task without a device and frame id: %s", sorted(kwargs))
            return "malformed"
        try:
            return runtime.pipeline.handle(kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            runtime.metrics.malformed_tasks.inc()
            logger.error("dropping a task whose arguments do not fit the contract: %s", exc)
            return "malformed"
        except FrameBusy as exc:
            logger.info(
                "frame %s from %s is claimed by another delivery; retrying in %.1f s",
                kwargs["frame_id"],
                kwargs["device"],
                exc.retry_after_s,
            )
            raise self.retry(exc=exc, countdown=exc.retry_after_s) from exc
        except RedisError as exc:
            logger.warning("Redis unavailable while answering frame %s (%s); retrying", kwargs["frame_id"], exc)
            raise self.retry(exc=exc, countdown=RETRY_DELAY_S) from exc
        except PublishFailed as exc:
            runtime.metrics.publish_failures.inc()
            logger.warning(
                "answer for frame %s from %s not published (%s); retrying", kwargs["frame_id"], kwargs["device"], exc
            )
            raise self.retry(exc=exc, countdown=RETRY_DELAY_S) from exc

    return recognize_frame
