"""How alike two photos must be to be taken for one product: the similarity the review queue groups frames by.

Calibrated on a version's gallery, where every photo's product is known: among pairs of photos of a sample of
products (whole categories of them, so look-alike siblings meet), the lowest cosine similarity above which at least
`precision` of the pairs are of one product. Two frames that alike are put in one cluster for the operator; a
threshold this strict splits a product into two clusters before it merges two products into one (a merge would
label a look-alike wrongly, a split costs one more click).
"""

from __future__ import annotations

import numpy as np

SAME_PRODUCT_PRECISION = 0.95
SAMPLE_PRODUCTS = 200  # products drawn for the pairs (every one when fewer): 1,200 photos, ~50 ms on one core
SAMPLE_PER_PRODUCT = 6  # photos of each
MIN_SAME_PAIRS = 10  # fewer pairs of one product than this: no calibration (None)


def same_product_similarity(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    categories: np.ndarray | None = None,
    precision: float = SAME_PRODUCT_PRECISION,
    seed: int = 0,
) -> float | None:
    """The lowest similarity at which pairs of photos at least that alike are of one product `precision` of the
    time; None with fewer than two products or too few pairs of one product. `features` L2-normalised rows,
    `labels` each row's product, `categories` each row's category (products are drawn by whole categories, so
    look-alike siblings meet in the pairs; without them, at random)."""
    labels = np.asarray(labels)
    rows = _sample(labels, labels if categories is None else np.asarray(categories), np.random.default_rng(seed))
    sample, names = np.asarray(features, dtype=np.float32)[rows], np.asarray(labels)[rows]
    if len(np.unique(names)) < 2:
        return None
    upper = np.triu_indices(len(rows), k=1)
    similarity = (sample @ sample.T)[upper]
    same = (names[:, None] == names[None, :])[upper]
    if same.sum() < MIN_SAME_PAIRS:
        return None
    order = np.argsort(-similarity, kind="stable")
    share = np.cumsum(same[order]) / np.arange(1, len(order) + 1)  # precision of "one product" down to each pair
    good = np.flatnonzero(share >= precision)
    if not len(good):
        return float(similarity[order[0]])  # nothing reaches it: only the most alike pair would be grouped
    return float(similarity[order[good[-1]]])


def _sample(labels: np.ndarray, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of up to SAMPLE_PRODUCTS products, drawn by whole categories in random order (a category that would
    pass the count is cut at it), up to SAMPLE_PER_PRODUCT photos of each."""
    names: list[object] = []
    for category in rng.permutation(np.unique(categories)):
        names.extend(rng.permutation(np.unique(labels[categories == category])).tolist())
        if len(names) >= SAMPLE_PRODUCTS:
            break
    rows = []
    for name in names[:SAMPLE_PRODUCTS]:
        of_it = np.flatnonzero(labels == name)
        rows.append(of_it if len(of_it) <= SAMPLE_PER_PRODUCT else rng.choice(of_it, SAMPLE_PER_PRODUCT, replace=False))
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=int)
