"""The Celery tasks: thin, named, acknowledged late; all the work is in FramePipeline.

`partsight.recognize_frames` carries a window of frames (what bridges send); `partsight.recognize_frame`
carries one (what bridges sent before windows) and is served the same way, so an upgrade loses no frame.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from celery import Celery, Task
from redis.exceptions import RedisError

from broker.contract import CONSOLIDATE_TASK, ENROL_QUEUE, ENROL_TASK, RECOGNIZE_BATCH_TASK, RECOGNIZE_TASK
from models.train.consolidation import refinements_of
from worker.consolidator import BUSY, DONE, FAILED
from worker.errors import EnrolmentBusy, MalformedTask, SettleFailed
from worker.runtime import Runtime, RuntimeHolder

logger = logging.getLogger(__name__)

RETRY_DELAY_S = 2
ENROL_RETRY_S = 2  # an enrolment that cannot start now (another one runs) waits this long, off the pool
CONSOLIDATE_RETRY_S = 30  # a consolidation that finds another one running comes back this much later
CONSOLIDATE_RETRIES = 20  # that often at most; the running one takes the enrolments along anyway


def task_retry(task: Task, exc: Exception) -> Exception:
    logger.warning("Redis unavailable during an enrolment (%s); retrying in %d s", exc, RETRY_DELAY_S)
    retried: Exception = task.retry(exc=exc, countdown=RETRY_DELAY_S)
    return retried


def run_enrolment(task: Task, runtime: Runtime, kwargs: dict[str, Any], consolidate: Task) -> dict[str, Any]:
    """The `partsight.enrol` task; one that made a version sends `consolidate` for later (its refinement folded in)."""
    if runtime.enrolments is None:
        # only a worker that cannot enrol gets here (started with `celery -Q` by hand): another may
        logger.error("this worker cannot run enrolments (%s): giving the task back", runtime.enrolment_problem)
        raise task.retry(countdown=ENROL_RETRY_S * 5)
    try:
        outcome = runtime.enrolments.handle(kwargs)
    except MalformedTask as exc:
        runtime.metrics.malformed_tasks.inc()
        logger.error("dropping an enrolment task that does not fit the contract: %s", exc)
        return {"state": "malformed"}
    except EnrolmentBusy as exc:  # give the thread back to the frames; the task comes again shortly
        delay = ENROL_RETRY_S if exc.retry_in_s is None else max(0.05, exc.retry_in_s)
        logger.info("enrolment deferred (%s); trying again in %.1f s", exc, delay)
        raise task.retry(countdown=delay) from exc
    except RedisError as exc:
        raise task_retry(task, exc) from exc
    if outcome.ran and outcome.state == "done":
        try:
            consolidate.apply_async(countdown=runtime.settings.consolidate_after_s)
        except Exception as exc:  # the enrolment is done: the next one (or `models --consolidate`) folds it in
            logger.warning("could not send the consolidation after enrolment %s: %s", outcome.enrolment, exc)
    return {"enrolment": outcome.enrolment, "state": outcome.state, "version": outcome.version}


def run_consolidation(task: Task, runtime: Runtime) -> dict[str, Any]:
    """The `partsight.consolidate` task: one consolidation of the store, or again later when one runs already."""
    if runtime.consolidator is None:
        logger.error("this worker cannot consolidate (%s): giving the task back", runtime.enrolment_problem)
        raise task.retry(countdown=CONSOLIDATE_RETRY_S)
    outcome, seconds = runtime.consolidator.consolidate()
    runtime.metrics.consolidations.labels(outcome=outcome).inc()
    if outcome == BUSY:
        raise task.retry(countdown=CONSOLIDATE_RETRY_S)
    if outcome in (DONE, FAILED):
        runtime.metrics.consolidation_seconds.observe(seconds)
    if outcome == DONE and refinements_of(runtime.consolidator.store):
        # the child stopped with quick enrolments left (its time was up): the tasks their enrolments sent gave up
        # while it ran (CONSOLIDATE_RETRIES), and nothing else would fold them in before the next enrolment
        try:
            task.apply_async(countdown=runtime.settings.consolidate_after_s)
        except Exception as exc:  # the next enrolment (or `models --consolidate`) folds them in
            logger.warning("could not send the next consolidation: %s", exc)
    return {"state": outcome, "seconds": round(seconds, 3)}


def register(app: Celery, holder: RuntimeHolder) -> tuple[Task, Task, Task, Task]:
    options: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "max_retries": None,
        "ignore_result": True,
    }

    def run(task: Task, kwargs: dict[str, Any]) -> dict[str, int]:
        runtime = holder.get()
        try:
            outcome = runtime.pipeline.handle(kwargs)
        except MalformedTask as exc:
            runtime.metrics.malformed_tasks.inc()
            logger.error("dropping a task that does not fit the contract: %s", exc)
            return {"malformed": 1}
        except SettleFailed as exc:  # answers went out: the retry records them before claiming anything again
            frames = [dict(ref.task) for ref in exc.retry]
            settle = {"done": exc.done, "finished": exc.finished}
            raise task.retry(kwargs={"frames": frames, "settle": settle}, countdown=exc.retry_after_s) from exc
        except RedisError as exc:  # nothing went out yet: the whole task again
            logger.warning("Redis unavailable while answering a task (%s); retrying in %d s", exc, RETRY_DELAY_S)
            raise task.retry(exc=exc, countdown=RETRY_DELAY_S) from exc
        if outcome.retry:
            frames = [dict(ref.task) for ref in outcome.retry]
            logger.info("%d frame(s) retried in %.1f s", len(frames), outcome.retry_after_s)
            raise task.retry(kwargs={"frames": frames}, countdown=outcome.retry_after_s)
        return dict(Counter(outcome.outcomes))

    @app.task(name=RECOGNIZE_BATCH_TASK, **options)
    def recognize_frames(self: Task, **kwargs: Any) -> dict[str, int]:
        return run(self, kwargs)

    @app.task(name=RECOGNIZE_TASK, **options)
    def recognize_frame(self: Task, **kwargs: Any) -> dict[str, int]:
        return run(self, kwargs)

    @app.task(name=ENROL_TASK, queue=ENROL_QUEUE, **options)
    def enrol(self: Task, **kwargs: Any) -> dict[str, Any]:
        return run_enrolment(self, holder.get(), kwargs, consolidate)

    # acknowledged on receipt: a child that runs for minutes would otherwise be handed out again each visibility
    # timeout; a consolidation lost with its worker is sent again by the next enrolment (or run by hand)
    once = {**options, "acks_late": False, "reject_on_worker_lost": False, "max_retries": CONSOLIDATE_RETRIES}

    @app.task(name=CONSOLIDATE_TASK, queue=ENROL_QUEUE, **once)
    def consolidate(self: Task) -> dict[str, Any]:
        return run_consolidation(self, holder.get())

    return recognize_frames, recognize_frame, enrol, consolidate
