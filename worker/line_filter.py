"""A line's products as a mask over the products of the version a frame is answered with: what
models.answer.answerer restricts a frame's answer to. One mask per version and edit of a line, computed once."""

from __future__ import annotations

import logging

import numpy as np

from models.store.plant_lines import Line

logger = logging.getLogger(__name__)

MAX_MASKS = 256  # versions x lines x edits kept; past it the cache starts again


class LineMasks:
    def __init__(self) -> None:
        self._masks: dict[tuple[str, str, str], np.ndarray] = {}

    def mask(
        self, version: str, products: tuple[str, ...], categories: tuple[str, ...], line: Line | None
    ) -> np.ndarray | None:
        """The products of `version` (with their `categories`, aligned) that `line` admits; None for no line."""
        if line is None:
            return None
        key = (version, line.name, line.updated_at)
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= MAX_MASKS:
                self._masks.clear()
            mask = np.array([line.admits(p, c) for p, c in zip(products, categories, strict=True)], dtype=bool)
            self._masks[key] = mask
            if not mask.any():
                logger.warning(
                    "line %s names no product of version %s: its frames are answered unknown", line.name, version
                )
        return mask
