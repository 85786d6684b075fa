from __future__ import annotations

import threading
import time

import pytest

from worker.batcher import BatcherClosed, MicroBatcher


def test_concurrent_items_share_a_batch_up_to_the_maximum() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        release.wait(5)
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=4, max_wait_s=0.5)
    first = batcher.submit(0)  # starts a batch that blocks in run() until released
    time.sleep(0.6)
    futures = [batcher.submit(i) for i in range(1, 10)]  # queue up while the first batch runs
    release.set()
    assert first.result(5).value == 0
    results = [f.result(5) for f in futures]
    assert [r.value for r in results] == [i * 10 for i in range(1, 10)]
    assert sizes == [1, 4, 4, 1]
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 4, 4, 4, 4, 1]
    batcher.close()


def test_a_lone_item_waits_at_most_max_wait() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(lambda items: items, max_batch_size=64, max_wait_s=0.05)
    started = time.monotonic()
    assert batcher.submit("x").result(5).value == "x"
    assert time.monotonic() - started < 2.0  # generous: only proves it did not wait for a full batch
    batcher.close()


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_serving() -> None:
    def run(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("bad item")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=1, max_wait_s=0)
    with pytest.raises(ValueError, match="bad item"):
        batcher.submit(-1).result(5)
    assert batcher.submit(7).result(5).value == 7
    batcher.close()


def test_wrong_result_count_is_an_error_not_a_hang() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [], max_batch_size=2, max_wait_s=0)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        batcher.submit(1).result(5)
    batcher.close()


def test_close_finishes_submitted_items_then_refuses() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, max_batch_size=8, max_wait_s=10)
    pending = [batcher.submit(i) for i in range(3)]
    batcher.close()
    assert [f.result(1).value for f in pending] == [0, 1, 2]
    with pytest.raises(BatcherClosed):
        batcher.submit(3)


def test_lanes_run_batches_at_the_same_time_and_never_run_an_empty_batch() -> None:
    running, peak, sizes = 0, 0, []
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            sizes.append(len(items))
        time.sleep(0.05)
        with lock:
            running -= 1
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=2, max_wait_s=0.001, lanes=2)
    futures = []
    for i in range(40):
        futures.append(batcher.submit(i))
        time.sleep(0.002)
    assert [f.result(5).value for f in futures] == list(range(40))
    batcher.close()
    assert peak == 2  # one lane alone could never have two batches in run() at once
    assert min(sizes) >= 1 and sum(sizes) == 40

    with pytest.raises(ValueError, match="lanes"):
        MicroBatcher(run, max_batch_size=1, max_wait_s=0, lanes=0)
