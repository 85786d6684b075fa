"""The Celery app. `celery -A worker.app worker` and `partsight worker` both start it.

Settings are read here, once, because this module is the worker's entry point.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down
from kombu.entity import Queue

from broker.contract import FRAME_QUEUE
from broker.dispatch import SAFE_CONTENT, celery_transport_options
from worker.runtime import RuntimeHolder
from worker.settings import WorkerSettings
from worker.tasks import register

logger = logging.getLogger(__name__)


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
        task_queues=[Queue(FRAME_QUEUE)],
        worker_pool="threads",
        worker_concurrency=settings.concurrency,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=celery_transport_options(settings.visibility_timeout_s),
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    holder = RuntimeHolder(settings)
    register(app, holder)
    return app, holder


settings = WorkerSettings.from_env()
app, runtime = create_app(settings)


@worker_ready.connect
def _load_model_when_ready(sender: Any = None, **_: Any) -> None:
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "")
    if "prefork" not in pool:
        runtime.get()


@worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    runtime.get()


@worker_shutting_down.connect
def _draining(**_: Any) -> None:
    """SIGTERM: Celery stops taking tasks and finishes those it holds; say so on /readyz from the first moment."""
    runtime.stop_accepting()


@worker_shutdown.connect
def _close(**_: Any) -> None:
    runtime.close()
