"""A dynamic micro-batcher: concurrent callers submit single items; lane threads run them through a batch function.

A batch closes when it holds `max_batch_size` items or when `max_wait_s` has passed since its first item,
so a lone frame waits at most `max_wait_s` and a burst shares one forward pass. With several `lanes`, that
many batches run at once (for an engine that releases the GIL, such as ONNX Runtime: one lane per core).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from worker.errors import BatcherClosed

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Batched(Generic[R]):
    """One item's result with the batch it rode in."""

    value: R
    batch_size: int
    batch_seconds: float


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "micro-batcher",
        lanes: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_s)
        self._on_batch = on_batch
        self._items: deque[tuple[T, Future[Batched[R]], float]] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{lane}", daemon=True) for lane in range(lanes)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: T) -> Future[Batched[R]]:
        future: Future[Batched[R]] = Future()
        with self._condition:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            self._items.append((item, future, time.monotonic()))
            self._condition.notify_all()  # a lane filling a batch and an idle lane may both be waiting
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Finish what was submitted, then stop the lanes."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next_batch(self) -> list[tuple[T, Future[Batched[R]], float]] | None:
        with self._condition:
            while True:
                while not self._items:
                    if self._closed:
                        return None
                    self._condition.wait()
                deadline = self._items[0][2] + self.max_wait_s
                while len(self._items) < self.max_batch_size and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
                if not self._items:  # another lane took them while this one waited
                    continue
                count = min(len(self._items), self.max_batch_size)
                batch = [self._items.popleft() for _ in range(count)]
                if self._items:
                    self._condition.notify()  # an idle lane can start on the rest
                return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            started = time.perf_counter()
            try:
                results = self._run_batch([item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # the callers get the exception; the batcher keeps serving
                logger.exception("batch of %d failed", len(batch))
                for _, future, _ in batch:
                    future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            if self._on_batch:
                self._on_batch(len(batch), elapsed)
            for (_, future, _), value in zip(batch, results, strict=True):
                future.set_result(Batched(value, len(batch), elapsed))
