"""Where a worker's CPU goes, by stage, from py-spy's samples of the whole process under load.

`bench.e2e --profile` records the worker with `py-spy record --format raw` during a capacity run; this module
reads those stacks and charges each sample to one stage: the first frame, from the innermost outwards, that
belongs to a stage names it. py-spy leaves idle threads out, but counts a thread that waits for a core (or the
GIL) as busy, so on a loaded 2-core box the samples add up to more than the CPU the process used: each stage's
share of the samples is scaled to the worker's CPU time from /proc. Native threads that run no Python (BLAS or
OpenMP pools) are never sampled; with the pools pinned (models.extract.threads) there are none that work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# (stage, pattern on "function (file:line)"), tried in order on each frame from the innermost outwards
STAGE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (stage, re.compile(pattern))
    for stage, pattern in (
        ("decode", r"\(.*models/extract/decode\.py|\(.*/PIL/"),
        ("engine", r"\(.*models/extract/(engines|cuda_engine|features)\.py|onnxruntime"),
        ("gallery", r"^similarities \(.*models/answer/gallery\.py"),
        ("matches", r"^matches \(.*models/answer/gallery\.py"),
        ("novelty", r"\(.*models/answer/novelty\.py|^(best_by_product|novelty_of) "),
        ("head", r"\(.*models/answer/(head|classifiers)\.py|/sklearn/"),
        ("review", r"\(.*worker/review_sink\.py|\(.*models/store/review"),
        ("publish", r"\(.*worker/publisher\.py|\(.*broker/mqtt\.py|/paho/"),
        ("redis (frames, ledger)", r"\(.*worker/ledger\.py|\(.*broker/framestore\.py|/redis/"),
        ("result encoding", r"^_result \(|\(.*broker/contract\.py|/json/"),
        ("celery and kombu", r"/celery/|/kombu/|/billiard/|/vine/|/amqp/"),
        ("batcher", r"\(.*worker/batcher\.py"),
        ("metrics", r"/prometheus_client/"),
        ("objects", r"\(.*worker/object"),
    )
)
OTHER = "other Python"
WAITING = "waiting"  # a thread py-spy took for busy while it waited (a condition, a queue, epoll): left out
# the innermost frames of a thread that waits: py-spy's idle detection misses some while the GIL changes hands
WAITS = re.compile(
    r"^(Condition\.wait|Event\.wait|Queue\.get|_worker|_epoll\.poll|select|poll|sleep|Future\.result) \("
)


def stage_of(stack: Iterable[str]) -> str:
    """The stage a stack (outermost frame first) is charged to."""
    frames = list(stack)
    if frames and WAITS.match(frames[-1]):
        return WAITING
    for frame in reversed(frames):
        for stage, pattern in STAGE_RULES:
            if pattern.search(frame):
                return stage
    return OTHER


def read_raw(text: str) -> Counter[str]:
    """Samples by stage from py-spy's raw format: `frame;frame;...;frame COUNT` per line."""
    samples: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[stage_of(stack.split(";"))] += int(count)
    return samples


def cpu_ms_per_frame(samples: Counter[str], frames: int, process_cpu_s: float) -> dict[str, float]:
    """CPU-ms per frame by stage: each stage's share of the samples times the process's CPU per frame."""
    busy = {stage: count for stage, count in samples.items() if stage != WAITING}
    total = sum(busy.values())
    if not total or not frames:
        return {}
    per_frame = {stage: count / total * process_cpu_s * 1000 / frames for stage, count in busy.items()}
    return dict(sorted(per_frame.items(), key=lambda item: -item[1]))


class Recorder:
    """py-spy attached to one process for as long as the `with` block runs."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """py-spy's path, or None when it is not installed (`pip install py-spy`)."""
        return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))

    def __enter__(self) -> Recorder:
        binary = self.available()
        if binary is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        command = [binary, "record", "--format", "raw", "--rate", str(self.rate), "--pid", str(self.pid)]
        self._process = subprocess.Popen(
            [*command, "--output", str(self.out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            said = self._process.communicate(timeout=60)[1]
            if not self.out.exists():
                raise RuntimeError(f"py-spy wrote no profile: {said.decode(errors='replace')[-500:]}")

    def samples(self) -> Counter[str]:
        return read_raw(self.out.read_text())
