"""How a frame on a line is answered: among the line's products only, and ranked among them by a classifier of the
line's own where one was fitted (models.train.line_ranker).

A `LineScope` is a mask over the head's products (the line's) and, optionally, a `ranker`: a classifier over the
line's products fitted on their training photos alone. The head's probabilities are renormalised over the mask;
the ranker then shares the probability its products hold out again among them, as a model trained on those
products alone would. A head over a thousand look-alikes spends its weights telling each product from all the
others; a line makes a few dozen, and its own classifier tells those apart as well as a model of them alone. The
gallery and the novelty score stay the version's; the novelty threshold may be the line's own, calibrated with its
ranker (a line's frames are more confident than the whole catalog's, so the version's threshold lets more
never-seen frames through on a line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.answer.classifiers import Classifier
from models.answer.novelty import expit, logit


@dataclass(frozen=True, eq=False)
class LineScope:
    mask: np.ndarray  # (products,) bool over the head's products: the line's
    ranker: Classifier | None = None  # over some of the line's products (two or more)
    columns: np.ndarray | None = None  # the head's column of each of the ranker's classes, in its order
    # the novelty threshold on this line (calibrated with the ranker on its own products); None: the version's
    novelty_threshold: float | None = None


def line_scope(
    products: Sequence[str],
    mask: np.ndarray,
    ranker: Classifier | None = None,
    novelty_threshold: float | None = None,
) -> LineScope:
    """The scope of a line over a head of `products`; ValueError when the ranker names a product the mask leaves
    out (a ranker fitted for another version or another edit of the line)."""
    allowed = np.asarray(mask, dtype=bool)
    if allowed.shape != (len(products),):
        raise ValueError(f"a mask of {allowed.shape} for {len(products)} products")
    if ranker is None:
        return LineScope(allowed, novelty_threshold=novelty_threshold)
    column = {product: index for index, product in enumerate(products)}
    missing = [name for name in ranker.classes if name not in column or not allowed[column[name]]]
    if missing:
        raise ValueError(f"the line's ranker names products outside the line: {missing[:5]}")
    columns = np.array([column[name] for name in ranker.classes], dtype=np.int64)
    return LineScope(allowed, ranker, columns, novelty_threshold)


def ranked_by_lines(probabilities: np.ndarray, features: np.ndarray, scopes: Sequence[LineScope | None]) -> np.ndarray:
    """`probabilities` (rows, products), each row's already renormalised over its line, with the mass of each row's
    ranker's products shared out again by the ranker. Rows of one ranker are scored together."""
    by_ranker: dict[int, list[int]] = {}
    for row, scope in enumerate(scopes):
        if scope is not None and scope.ranker is not None:
            by_ranker.setdefault(id(scope.ranker), []).append(row)
    if not by_ranker:
        return probabilities
    result = np.array(probabilities, dtype=np.float64, copy=True)
    for rows in by_ranker.values():
        scope = scopes[rows[0]]
        assert scope is not None and scope.ranker is not None and scope.columns is not None
        block = np.ix_(np.asarray(rows, dtype=np.int64), scope.columns)
        mass = result[block].sum(axis=1, keepdims=True)
        result[block] = mass * scope.ranker.probabilities(np.asarray(features[rows], dtype=np.float32))
    return result


def on_the_versions_scale(novelty: float, line_threshold: float, version_threshold: float) -> float:
    """A frame's novelty on a line with a threshold of its own, shifted (in logit space) so that the line's threshold
    falls on the version's: what an object's operating point, calibrated on the version's scale, compares
    (models.answer.object_rule). A score at the line's threshold comes out at the version's."""
    return expit(logit(novelty) + logit(version_threshold) - logit(line_threshold))
