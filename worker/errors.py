"""Exceptions of the worker package.

WorkerError                 base of everything raised here
├── MalformedTask           a task (or one frame in it) that does not fit the contract; counted and dropped
├── BatcherClosed           a frame submitted to the micro-batcher after it was closed
├── SettleFailed            answers went out but Redis would not record them; carries what to record
├── ModelUnavailable        the worker cannot serve: its model (or engine) cannot be loaded
└── EnrolmentBusy           an enrolment that cannot start now (another runs, the store is held): try again later
"""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    """Base of the worker package's exceptions."""


class MalformedTask(WorkerError):
    """A task, or one frame in it, that does not fit the contract; it cannot be answered."""


class BatcherClosed(WorkerError):
    """Raised by MicroBatcher.submit() after close()."""


class SettleFailed(WorkerError):
    """A window's answers went out but Redis would not record them in time. `done` and `finished` must be
    written before its frames are claimed again (the task's retry carries them); `retry` are the frames that
    still need an answer, `retry_after_s` when."""

    def __init__(self, done: list[str], finished: list[str], retry: list[Any], retry_after_s: float) -> None:
        super().__init__(f"{len(done)} answered frame(s) could not be recorded")
        self.done, self.finished, self.retry, self.retry_after_s = done, finished, retry, retry_after_s


class ModelUnavailable(WorkerError):
    """The worker cannot serve frames: its model or engine cannot be loaded. It must not take frames."""


class EnrolmentBusy(WorkerError):
    """An enrolment that cannot start now: this process runs another, another process holds the store, the
    store cannot be read or written at the moment, or it waits for more photos of its product. Its task is tried
    again later (`retry_in_s`, None: the usual delay)."""

    def __init__(self, message: str, *, retry_in_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_in_s = retry_in_s
