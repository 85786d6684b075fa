"""The worker's frame budget: windows wait for room before claiming; a window bigger than the budget runs alone."""

from __future__ import annotations

import threading

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
