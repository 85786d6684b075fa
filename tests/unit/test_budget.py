"""The worker's frame budget: windows wait for room before claiming; a window bigger than the budget runs alone."""

from __future__ import annotations

import threading
import time

from worker.budget import FrameBudget


def test_a_window_waits_until_the_frames_ahead_of_it_are_done() -> None:
    budget = FrameBudget(32)
    entered = threading.Event()
    with budget.hold(20):

        def second() -> None:
            with budget.hold(20):
                entered.set()

        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        assert not entered.wait(0.2) and budget.held == 20  # 40 > 32: it waits
    thread.join(5)
    assert entered.is_set() and budget.held == 0


def test_a_window_larger_than_the_budget_runs_alone_rather_than_never() -> None:
    budget = FrameBudget(8)
    with budget.hold(32):
        assert budget.held == 32
    assert budget.held == 0


def test_a_waiting_window_is_not_overtaken_by_smaller_ones() -> None:
    budget = FrameBudget(32)
    order: list[str] = []
    big_waiting = threading.Event()

    def window(name: str, frames: int, ready: threading.Event | None = None) -> None:
        if ready is not None:
            ready.set()
        with budget.hold(frames):
            order.append(name)

    with budget.hold(20):  # in progress
        big = threading.Thread(target=window, args=("big", 20, big_waiting), daemon=True)
        big.start()
        big_waiting.wait(5)
        while not budget._line:  # the big window is in line
            time.sleep(0.01)
        small = threading.Thread(target=window, args=("small", 4), daemon=True)
        small.start()  # 20 + 4 fits, but the big window came first
        time.sleep(0.2)
        assert order == []
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]
