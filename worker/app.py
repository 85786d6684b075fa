"""The Celery app. `partsight worker` and `celery -A worker.app worker` both start it.

Nothing is read at import: `partsight worker` reads the settings and calls `worker_app(settings)`; for Celery's
own command line, `app` is built from the environment when Celery first asks for it (a module `__getattr__`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_shutdown, worker_shutting_down
from kombu.entity import Queue

from broker.contract import ENROL_QUEUE, ENROL_TASK, FRAME_QUEUE
from broker.dispatch import SAFE_CONTENT, celery_transport_options
from worker.consumer import UNKNOWN_TASK_HOOK
from worker.errors import ModelUnavailable
from worker.runtime import RuntimeHolder
from worker.settings import WorkerSettings, open_review_store
from worker.tasks import register

logger = logging.getLogger(__name__)

EXIT_CANNOT_SERVE = 3  # the model (or engine) cannot be loaded: the worker took no frame


def create_app(settings: WorkerSettings) -> tuple[Celery, RuntimeHolder]:
    app = Celery("partsight-worker", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=SAFE_CONTENT,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=FRAME_QUEUE,
        task_queues=[Queue(FRAME_QUEUE), Queue(ENROL_QUEUE)],
        task_routes={ENROL_TASK: {"queue": ENROL_QUEUE}},
        worker_pool="threads",
        worker_concurrency=settings.concurrency,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=celery_transport_options(settings.visibility_timeout_s),
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_consumer="worker.consumer:RequeueingConsumer",  # a task it does not know goes back, never dropped
    )
    holder = RuntimeHolder(settings)
    register(app, holder)
    setattr(app, UNKNOWN_TASK_HOOK, lambda name: holder.get().metrics.unknown_tasks.labels(task=task_label(name)).inc())
    return app, holder


def task_label(name: str) -> str:
    """A task name as a metric label: ours as they are, anything else as `other` (names come from the queue)."""
    return name if name.startswith("partsight.") and len(name) <= 64 else "other"


def worker_app(settings: WorkerSettings) -> Celery:
    """The app a worker process runs: the review store checked first (an unwritable one is a SettingsError, like
    any bad setting), then the app, its runtime tied to Celery's worker signals (load before consuming, drain on
    SIGTERM, close at the end). Once per process."""
    open_review_store(settings)
    app, runtime = create_app(settings)
    connect_lifecycle(runtime)
    return app


def connect_lifecycle(runtime: RuntimeHolder) -> None:
    """Tie `runtime` to this process's Celery worker signals."""

    def load_before_consuming(sender: Any = None, **_: Any) -> None:
        """Load and verify the model before Celery takes a single task; a worker that cannot serve exits non-zero
        with the reason, so an orchestrator shows a crash and frames wait for a healthy worker (a prefork pool's
        children load their own, after the fork, so CUDA is never touched in the parent)."""
        if "prefork" in str(getattr(sender, "pool_cls", "")):
            return
        try:
            runtime.get()
        except ModelUnavailable as exc:
            logger.critical("%s; exiting without taking any frame", exc)
            raise SystemExit(EXIT_CANNOT_SERVE) from exc

    def load_in_child(**_: Any) -> None:
        """A prefork child loads its own model after the fork; one that cannot serve ends at once rather than take
        tasks it would fail (Celery's signal dispatch would swallow an exception)."""
        try:
            runtime.get()
        except ModelUnavailable as exc:
            logger.critical("%s; this process exits without taking any frame", exc)
            os._exit(EXIT_CANNOT_SERVE)

    def draining(**_: Any) -> None:
        """SIGTERM: Celery stops taking tasks and finishes those it holds; say so on /readyz from the first moment."""
        runtime.stop_accepting()

    def close(**_: Any) -> None:
        runtime.close()

    worker_init.connect(load_before_consuming, weak=False)
    worker_process_init.connect(load_in_child, weak=False)
    worker_shutting_down.connect(draining, weak=False)
    worker_shutdown.connect(close, weak=False)


def __getattr__(name: str) -> Celery:
    """`celery -A worker.app worker`: Celery looks up `app` here, and that is the start-up that reads the settings."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = worker_app(WorkerSettings.from_env())
    globals()["app"] = app
    return app
