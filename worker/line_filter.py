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

from models.answer.line_scope import LineScope, line_scope
from models.bundle import ModelBundle
from models.errors import ModelError
from models.store.plant_lines import Line
from models.train.line_ranker import LineRanker

logger = logging.getLogger(__name__)

MAX_SCOPES = 256  # versions x lines x edits kept; past it the cache starts again
RankerFit = Callable[[ModelBundle, Sequence[str]], LineRanker | None]
Key = tuple[str, str, str]  # version, line, the line's updated_at


class LineScopes:
    def __init__(self, fit: RankerFit | None = None, on_fitted: Callable[[str, float], None] | None = None) -> None:
        """`fit`: a line's ranker from a version and its products (None: lines answered by the mask alone);
        `on_fitted(outcome, seconds)` after each try: fitted, none (nothing to fit) or failed."""
        self._fit = fit
        self._on_fitted = on_fitted or (lambda outcome, seconds: None)
        self._scopes: dict[Key, LineScope] = {}
        self._tried: set[Key] = set()
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
        with self._lock:
            scope = self._scopes.get(key)
            if scope is None:
                if len(self._scopes) >= MAX_SCOPES:
                    self._scopes.clear()
                    self._tried.clear()
                mask = np.array([line.admits(p, c) for p, c in zip(products, categories, strict=True)], dtype=bool)
                scope = self._scopes[key] = line_scope(products, mask)
                if not mask.any():
                    logger.warning(
                        "line %s names no product of version %s: its frames are answered unknown", line.name, version
                    )
            start = bundle is not None and self._pool is not None and key not in self._tried and scope.ranker is None
            if start:
                self._tried.add(key)
        if start:
            assert self._pool is not None and bundle is not None
            chosen = tuple(p for p, keep in zip(products, scope.mask.tolist(), strict=True) if keep)
            self._pool.submit(self._fit_quietly, key, bundle, products, chosen)
        return scope

    def _fit_quietly(self, key: Key, bundle: ModelBundle, products: tuple[str, ...], chosen: tuple[str, ...]) -> None:
        """Fit one line's ranker; a failure is logged and counted, and the line stays answered by its mask."""
        assert self._fit is not None
        started = time.perf_counter()
        try:
            ranker = self._fit(bundle, chosen)
        except (ModelError, OSError, ValueError, MemoryError) as exc:
            logger.warning("line %s on version %s: no ranker of its own (%s)", key[1], key[0], exc)
            self._on_fitted("failed", time.perf_counter() - started)
            return
        seconds = time.perf_counter() - started
        if ranker is None:
            self._on_fitted("none", seconds)
            return
        with self._lock:
            mask = self._scopes[key].mask if key in self._scopes else None
            if mask is not None:
                self._scopes[key] = line_scope(products, mask, ranker.classifier, ranker.novelty_threshold)
        logger.info(
            "line %s on version %s ranked by its own classifier (%d products, novelty threshold %s, %.2f s)",
            key[1],
            key[0],
            len(ranker.classifier.classes),
            "the version's" if ranker.novelty_threshold is None else f"{ranker.novelty_threshold:.3f}",
            seconds,
        )
        self._on_fitted("fitted", seconds)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """True once every fit started so far has finished (tests and benches)."""
        if self._pool is None:
            return True
        done = threading.Event()
        self._pool.submit(done.set)
        return done.wait(timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
