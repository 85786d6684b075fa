"""The worker's side of consolidation: after quick enrolments, the full refit runs in a child process.

A quick enrolment makes its product answerable in seconds with a refinement on the head; the `partsight.consolidate`
task, sent after each, folds the refinements into the nodes (models.train.consolidation). The refit is minutes of
scikit-learn at a large catalog: run in this process it would hold the GIL from the frames' threads, so it runs
as `partsight models --consolidate` in a child process, at a lower priority (`nice`) and on one BLAS thread,
while the task's thread only waits. One consolidation a store at a time (the child takes a lock file and exits 75
when another process holds it: the task comes back later); a task that finds nothing left to fold does nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models.store.versions import current_version
from models.train.consolidation import BUSY_EXIT, consolidation_running, refinements_of

logger = logging.getLogger(__name__)

NICENESS = "10"  # below the frames' threads for the CPU
TIMEOUT_S = 4 * 3600.0  # a child past this is stopped and counted failed
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
NOTHING, BUSY, DONE, FAILED = "nothing", "busy", "done", "failed"

Run = Callable[..., "subprocess.CompletedProcess[str]"]


class Consolidator:
    def __init__(
        self,
        store: Path,
        *,
        keep_versions: int,
        reload_now: Callable[[], object],
        announce: Callable[[str, str], object],
        run: Run = subprocess.run,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`reload_now`: this worker's reloader check; `announce(version, reason)`: publish on MODEL_CHANNEL;
        `run`: subprocess.run (a test passes its own); `env`: the child's environment (default: this process's)."""
        self.store = store
        self._keep = keep_versions
        self._reload_now, self._announce = reload_now, announce
        self._run = run
        self._env = dict(os.environ if env is None else env)

    def command(self) -> list[str]:
        nice = shutil.which("nice")
        return [
            *([nice, "-n", NICENESS] if nice else []),
            sys.executable,
            "-m",
            "partsight.cli",
            "models",
            "--store",
            str(self.store),
            "--consolidate",
            "--keep",
            str(self._keep),
        ]

    def consolidate(self) -> tuple[str, float]:
        """NOTHING (no refinement left), BUSY (another consolidation of the store runs), DONE or FAILED, and the
        seconds the child took."""
        if refinements_of(self.store) == 0:
            return NOTHING, 0.0
        if consolidation_running(self.store):  # its rounds go on while any are left: no child to learn that
            return BUSY, 0.0
        before = current_version(self.store)
        started = time.monotonic()
        try:
            finished = self._run(
                self.command(),
                env={**self._env, **ONE_THREAD},
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            logger.error("consolidation of %s stopped after %.0f s", self.store, TIMEOUT_S)
            return FAILED, time.monotonic() - started
        seconds = time.monotonic() - started
        if finished.returncode == BUSY_EXIT:
            return BUSY, seconds
        if finished.returncode != 0:
            logger.error(
                "consolidation of %s failed (exit %s): %s", self.store, finished.returncode, _tail(finished.stderr)
            )
            return FAILED, seconds
        after = current_version(self.store)
        logger.info("consolidation of %s in %.1f s: %s", self.store, seconds, _tail(finished.stdout))
        if after is not None and after != before:
            self._tell(after)
        return DONE, seconds

    def _tell(self, version: str) -> None:
        try:
            self._reload_now()
        except Exception:
            logger.exception("reloading after a consolidation failed; the poll will try again")
        try:
            self._announce(version, "consolidation")
        except Exception as exc:  # the others still poll
            logger.warning("could not announce version %s (%s); other workers see it at their poll", version, exc)


def _tail(text: Any, lines: int = 5) -> str:
    return " | ".join(str(text or "").strip().splitlines()[-lines:])
