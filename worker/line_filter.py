"""A line's scope over the version a frame is answered with (models.answer.line_scope): the mask of its products,
computed at once, and its own ranker (models.train.line_ranker), fitted in a background thread the first time the
line is met on a version. Until the ranker is ready (or where none can be fitted: a version that keeps no training
rows, a line of one product) the line's frames are answered among its products by the head alone. One scope per
version and edit of a line."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from broker.line_rankers import RankerState
from models.answer.line_scope import LineScope, line_scope
from models.bundle import ModelBundle
from models.errors import ArtifactError, EnrolmentError
from models.store.plant_lines import Line
from models.train.line_ranker import LineRanker

logger = logging.getLogger(__name__)

MAX_SCOPES = 256  # versions x lines x edits kept; past it the cache starts again
RankerFit = Callable[[ModelBundle, Sequence[str]], LineRanker | None]
Key = tuple[str, str, str]  # version, line, the line's updated_at


class LineScopes:
    def __init__(
        self,
        fit: RankerFit | None = None,
        on_fitted: Callable[[str, float], None] | None = None,
        on_state: Callable[[RankerState], None] | None = None,
    ) -> None:
        """`fit`: a line's ranker from a version and its products (None: lines answered by the mask alone);
        `on_fitted(outcome, seconds)` after each try: fitted (its seconds), none (nothing to fit: a line of one
        product, or a version that keeps no training rows) or failed (seconds 0: not observed); `on_state(state)`
        then too, with the line, the version and the ranker (broker.line_rankers: what the operator page shows). A
        failing `on_state` is logged, never raised."""
        self._fit = fit
        self._on_fitted = on_fitted or (lambda outcome, seconds: None)
        self._on_state = on_state
        self._scopes: dict[Key, LineScope] = {}  # oldest first: past MAX_SCOPES the oldest goes
        self._tried: set[Key] = set()
        self._latest = ""  # the version the last frame was answered with: a fit queued for an older one is skipped
        self._closed = False
        self._queued = 0  # fits submitted and not finished: at none, the fit's cached rows are released
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="line-ranker") if fit else None

    def scope(
        self,
        version: str,
        products: tuple[str, ...],
        categories: tuple[str, ...],
        line: Line | None,
        bundle: ModelBundle | None = None,
    ) -> LineScope | None:
        """The scope of `line` over `version` (its head's `products`, with their `categories`, aligned); None for
        no line. With `bundle` (the version as loaded) its ranker is fitted in the background the first time."""
        if line is None:
            return None
        key = (version, line.name, line.updated_at)
        scope = self._scopes.get(key)
        if scope is None:
            mask = np.array([line.admits(p, c) for p, c in zip(products, categories, strict=True)], dtype=bool)
            if not mask.any():
                logger.warning(
                    "line %s names no product of version %s: its frames are answered unknown", line.name, version
                )
        with self._lock:
            self._latest = version
            if scope is None:
                scope = self._scopes.get(key) or line_scope(products, mask)
                self._scopes[key] = scope
                while len(self._scopes) > MAX_SCOPES:
                    self._tried.discard(oldest := next(iter(self._scopes)))
                    del self._scopes[oldest]
            start = bundle is not None and self._pool is not None and key not in self._tried and not self._closed
            if start:
                self._tried.add(key)
                self._queued += 1
        if start:
            assert self._pool is not None and bundle is not None
            chosen = tuple(p for p, keep in zip(products, scope.mask.tolist(), strict=True) if keep)
            self._pool.submit(self._fit_quietly, key, bundle, products, chosen)
        return scope

    def _fit_quietly(self, key: Key, bundle: ModelBundle, products: tuple[str, ...], chosen: tuple[str, ...]) -> None:
        """Fit one line's ranker; a failure is logged and counted, and the line stays answered by its mask. The last
        fit waiting releases what the fit function kept for the ones after it (a version's training rows)."""
        try:
            self._fit_one(key, bundle, products, chosen)
        finally:
            with self._lock:
                self._queued -= 1
                idle = self._queued == 0
            release = getattr(self._fit, "release", None)
            if idle and release is not None:
                release()

    def _fit_one(self, key: Key, bundle: ModelBundle, products: tuple[str, ...], chosen: tuple[str, ...]) -> None:
        assert self._fit is not None
        if key[0] != self._latest or self._closed:  # queued for a version no longer served
            with self._lock:
                self._tried.discard(key)
            return
        started = time.perf_counter()
        try:
            ranker = self._fit(bundle, chosen)
            if ranker is not None and ranker.classifier.input_dim != bundle.head.feature_dim:
                raise ArtifactError(
                    f"its training rows are {ranker.classifier.input_dim}-d, the head takes {bundle.head.feature_dim}"
                )
            with self._lock:
                current = self._scopes.get(key)
                if ranker is not None and current is not None:
                    self._scopes[key] = line_scope(products, current.mask, ranker.classifier, ranker.novelty_threshold)
        except EnrolmentError as exc:  # a version that keeps no training rows: the head alone, as for any such line
            logger.debug("line %s on version %s: no ranker of its own (%s)", key[1], key[0], exc)
            self._tried_once(key, "none")
            return
        except Exception:  # never out of this thread unseen: the line stays answered by the head alone
            logger.exception("line %s on version %s: its ranker could not be fitted", key[1], key[0])
            self._tried_once(key, "failed")
            return
        seconds = time.perf_counter() - started
        if ranker is None:
            self._tried_once(key, "none")
            return
        logger.info(
            "line %s on version %s ranked by its own classifier (%d products, novelty threshold %s, %.2f s)",
            key[1],
            key[0],
            len(ranker.classifier.classes),
            "the version's" if ranker.novelty_threshold is None else f"{ranker.novelty_threshold:.3f}",
            seconds,
        )
        self._tried_once(key, "fitted", seconds, ranker)

    def _tried_once(self, key: Key, outcome: str, seconds: float = 0.0, ranker: LineRanker | None = None) -> None:
        """One try's outcome to the metrics and, where asked, as the line's ranker state."""
        self._on_fitted(outcome, seconds)
        if self._on_state is None:
            return
        version, line, updated_at = key
        state = RankerState(
            line,
            updated_at,
            version,
            outcome,
            round(seconds, 3),
            len(ranker.classifier.classes) if ranker is not None else 0,
            ranker.novelty_threshold if ranker is not None else None,
            time.time(),
        )
        try:
            self._on_state(state)
        except Exception as exc:  # Redis away: the frames are answered all the same
            logger.warning("line %s: its ranker's state was not recorded (%s)", line, exc)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """True once every fit started so far has finished (tests and benches)."""
        if self._pool is None or self._closed:
            return True
        done = threading.Event()
        self._pool.submit(done.set)
        return done.wait(timeout_s)

    def close(self) -> None:
        self._closed = True
        release = getattr(self._fit, "release", None)
        if release is not None:  # fits cancelled below never get to release it
            release()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
