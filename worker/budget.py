"""How many frames one worker process works on at once, across its task threads.

A task is a window of up to 32 frames and a worker runs many tasks at once; without a bound, a busy worker
would hold hundreds of claimed frames queued behind one another, and a frame's claim could lapse while it
waits. A task takes its window's share of the budget before it claims anything, so claims cover work in
progress only. A window larger than the whole budget runs alone rather than never.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class FrameBudget:
    """First come, first served: a window that waits is never overtaken by smaller ones that would fit (they
    would starve it: small windows kept a 20-frame one waiting for the rest of a 10-second benchmark run)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the frame budget must be at least 1")
        self.limit = limit
        self._held = 0
        self._line: deque[object] = deque()
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, frames: int) -> Iterator[None]:
        ticket = object()
        with self._condition:
            self._line.append(ticket)
            while self._line[0] is not ticket or (self._held and self._held + frames > self.limit):
                self._condition.wait()
            self._line.popleft()
            self._held += frames
            self._condition.notify_all()  # the next in line may fit too
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
