"""How many frames one worker process works on at once, across its task threads.

A task is a window of up to 32 frames and a worker runs many tasks at once; without a bound, a busy worker
would hold hundreds of claimed frames queued behind one another, and a frame's claim could lapse while it
waits. A task takes its window's share of the budget before it claims anything, so claims cover work in
progress only. A window larger than the whole budget runs alone rather than never.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class FrameBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the frame budget must be at least 1")
        self.limit = limit
        self._held = 0
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, frames: int) -> Iterator[None]:
        with self._condition:
            while self._held and self._held + frames > self.limit:
                self._condition.wait()
            self._held += frames
        try:
            yield
        finally:
            with self._condition:
                self._held -= frames
                self._condition.notify_all()

    @property
    def held(self) -> int:
        with self._condition:
            return self._held
