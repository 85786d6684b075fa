"""A seeded sample of rows, in order: what a gallery keeps of a product's photos, and what a density is fitted on."""

from __future__ import annotations

import numpy as np


def sample_rows(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of at most `limit` of `count` rows, a seeded random sample, in order."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))
