"""The answer path (head + gallery + novelty + matches) works on the thread that calls it, never on library pools.

A lane owns one core. Unpinned, numpy's OpenBLAS splits every gallery and head product across one thread per core,
so on a 2-core box the answer path of one lane fought both lanes' model threads for the cores (bench.e2e: 115
frames/s unpinned against 165 pinned). The child process below builds the answer path at the shipped gallery size
(DEFAULT_MAX_PER_PRODUCT photos of every product), pins its pools as the worker does at start-up, and reports how
many of its threads did work while it answered batches: no more than the lane's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import json, os, sys, time
from pathlib import Path

import numpy as np

from models.answer.answerer import Answerer
from models.answer.gallery import DEFAULT_MAX_PER_PRODUCT, Gallery
from models.bundle import load_model

store, pin = Path(sys.argv[1]), sys.argv[2] == "pin"
if pin:  # what the worker does at start-up, from its settings
    from worker.runtime import pin_lane_pools
    from worker.settings import WorkerSettings

    settings = WorkerSettings.from_env({"PARTSIGHT_MODEL_DIR": str(store)})
    pin_lane_pools(settings)
bundle = load_model(store)
small = bundle.gallery
rng = np.random.default_rng(0)
rows, labels = [], []
for index in range(len(small.products)):  # every product at the gallery's bound, near its real photos
    own = small.features[small.labels == index]
    picked = own[rng.integers(0, len(own), DEFAULT_MAX_PER_PRODUCT)]
    noisy = picked + rng.normal(0, 0.02, picked.shape).astype(np.float32)
    rows.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    labels.append(np.full(DEFAULT_MAX_PER_PRODUCT, index))
n = DEFAULT_MAX_PER_PRODUCT * len(small.products)
gallery = Gallery(
    features=np.concatenate(rows).astype(np.float32),
    products=small.products,
    labels=np.concatenate(labels),
    photos=np.asarray([f"p{i}.jpg" for i in range(n)]),
    sha256=np.asarray(["0" * 64] * n),
    spread_mean=small.spread_mean,
    spread_std=small.spread_std,
)
answerer = Answerer(bundle.head, gallery, bundle.novelty)
queries = gallery.features[rng.integers(0, n, 32)]
answerer.answer(queries, matches=3)  # warm: every library loaded, every pool started


def cpu_ticks():
    ticks = {}
    for task in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{task}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        ticks[task] = int(fields[11]) + int(fields[12])
    return ticks


before = cpu_ticks()
started = time.monotonic()
calls = 0
while time.monotonic() - started < 1.5:
    answerer.answer(queries, matches=3)
    calls += 1
after = cpu_ticks()
per_second = os.sysconf("SC_CLK_TCK")
busy = [task for task in after if after[task] - before.get(task, 0) >= 0.1 * per_second]
print(json.dumps({"gallery": n, "calls": calls, "threads": len(after), "started": len(set(after) - set(before)),
                  "busy": len(busy), "main_busy": str(os.getpid()) in busy}))
"""


def answer_path_threads(store: Path, pin: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_NUM_THREADS", "_MAXIMUM_THREADS"))}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(store), "pin" if pin else "leave"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_the_answer_path_works_only_on_the_thread_of_its_lane(model_store: Path) -> None:
    report = answer_path_threads(model_store, pin=True)
    assert report["gallery"] == 5000 and report["calls"] > 0
    assert report["started"] == 0  # no thread started while answering
    assert report["busy"] == 1 and report["main_busy"], report  # the calling thread alone did the work


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a library pool has one thread on one core")
def test_left_unpinned_the_same_answer_path_spreads_over_the_pools_threads(model_store: Path) -> None:
    """The check above can fail: without the worker's pinning, OpenBLAS works on more threads than the lane's."""
    report = answer_path_threads(model_store, pin=False)
    assert int(report["busy"]) > 1, report  # type: ignore[call-overload]
