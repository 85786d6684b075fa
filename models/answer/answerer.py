"""From feature vectors to answers: the head's probabilities, the gallery's nearest photos and the novelty score.

A model version trained before galleries has a head only: its answers carry no novelty and no matches, and
"unknown" comes from the head's thresholds alone, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.answer.gallery import Gallery
from models.answer.head import UNKNOWN, Decision, ProductHead
from models.answer.line_scope import LineScope, ranked_by_lines
from models.answer.novelty import NoveltyModel, answered_index, novelty_inputs_of


@dataclass(frozen=True)
class Answerer:
    head: ProductHead
    gallery: Gallery | None = None
    novelty: NoveltyModel | None = None

    def __post_init__(self) -> None:
        problem = parts_problem(self.head, self.gallery, self.novelty)
        if problem is not None:
            raise ValueError(problem)

    def novelty_of(
        self,
        features: np.ndarray,
        probabilities: np.ndarray,
        nearest_rows: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Each row's novelty score; `nearest_rows` (Q, >=1): its nearest gallery photos, best first (-1: none),
        `masks` (Q, products): the products each row's line allows (None: all)."""
        if self.novelty is None or self.gallery is None:
            return None
        gallery = self.gallery
        answered = answered_index(probabilities, self.head.categories)
        similarity = gallery.best_of(features, answered)
        first = nearest_rows[:, 0] if nearest_rows.shape[1] else np.full(len(features), -1)
        nearest_product = np.where(first >= 0, gallery.labels[np.maximum(first, 0)], -1)
        density = gallery.density if self.novelty.uses_distance else None
        distance = None if density is None else density.nearest_distance(features, masks)
        inputs = novelty_inputs_of(
            probabilities, answered, similarity, nearest_product, gallery.spread_mean, gallery.spread_std, distance
        )
        return self.novelty.score(inputs)

    def answer(
        self,
        features: np.ndarray,
        *,
        matches: int = 3,
        allowed: Sequence[LineScope | np.ndarray | None] | None = None,
    ) -> list[Decision]:
        """Each row's decision. `allowed`: for each row, its line (a LineScope, or a bare mask over the head's
        products) or None (the whole catalog): a row on a line is answered only among the line's products, its
        probabilities renormalised over them (and shared out again by the line's ranker, where it has one) and its
        matches taken from them; the novelty score still refuses what is none of them."""
        scopes = _scopes(allowed, len(features))
        masks = _masks(scopes, len(self.head.products))
        probabilities = self.head.probabilities(features, masks)
        if masks is None or scopes is None:
            return self._answer_rows(features, probabilities, None, matches)
        kept = np.where(masks, probabilities, 0.0)
        total = kept.sum(axis=1, keepdims=True)
        probabilities = np.divide(kept, total, out=np.zeros_like(kept), where=total > 0)
        probabilities = ranked_by_lines(probabilities, features, scopes)
        some = np.asarray(masks.any(axis=1), dtype=bool)  # a line with none of this version's products: unknown
        thresholds = [None if scope is None else scope.novelty_threshold for scope in scopes]
        kept_thresholds = [t for t, keep in zip(thresholds, some.tolist(), strict=True) if keep]
        answered = iter(self._answer_rows(features[some], probabilities[some], masks[some], matches, kept_thresholds))
        nothing = Decision(UNKNOWN, None, None, 0.0, 0.0, [])
        return [next(answered) if any_product else nothing for any_product in some.tolist()]

    def _answer_rows(
        self,
        features: np.ndarray,
        probabilities: np.ndarray,
        masks: np.ndarray | None,
        matches: int,
        thresholds: Sequence[float | None] | None = None,
    ) -> list[Decision]:
        """`thresholds`: each row's novelty threshold where its line has its own (None: the version's)."""
        row_masks = [None] * len(probabilities) if masks is None else list(masks)
        if len(probabilities) == 0:
            return []
        if self.gallery is None:
            return [self.head.decide(row, allowed=mask) for row, mask in zip(probabilities, row_masks, strict=True)]
        rows, similarities = self.gallery.nearest(features, max(matches, 1), masks)
        novelty = self.novelty_of(features, probabilities, rows, masks)
        nearest = self.gallery.matches_of(rows[:, :matches], similarities[:, :matches])
        threshold = self.novelty.threshold if self.novelty is not None else None
        own = thresholds or [None] * len(probabilities)
        return [
            self.head.decide(
                row,
                novelty=None if novelty is None else float(novelty[i]),
                novelty_threshold=threshold if own[i] is None or threshold is None else own[i],
                matches=nearest[i],
                allowed=row_masks[i],
            )
            for i, row in enumerate(probabilities)
        ]


def parts_problem(head: ProductHead, gallery: Gallery | None, novelty: NoveltyModel | None) -> str | None:
    """What keeps a head, a gallery and a novelty score from answering together (None: nothing): the one check of
    an Answerer and of a version's load (models.bundle), which names it as malformed model files."""
    if novelty is not None and gallery is None:
        return "a novelty score without its gallery"
    if gallery is None:
        return None
    if gallery.products != head.products:
        return "the gallery's products are not the head's"
    if gallery.dim != head.feature_dim:
        return f"the gallery holds {gallery.dim}-d features, the head takes {head.feature_dim}"
    if novelty is not None and novelty.uses_distance and gallery.density is None:
        return "a novelty score of the product distance, and a gallery too small to give it"
    return None


def _scopes(allowed: Sequence[LineScope | np.ndarray | None] | None, rows: int) -> list[LineScope | None] | None:
    """Each row's line as a LineScope (a bare mask is a scope without a ranker), or None when no row is on one."""
    if allowed is None or all(scope is None for scope in allowed):
        return None
    if len(allowed) != rows:
        raise ValueError(f"{len(allowed)} masks for {rows} rows")
    return [
        scope if scope is None or isinstance(scope, LineScope) else LineScope(np.asarray(scope, dtype=bool))
        for scope in allowed
    ]


def _masks(scopes: Sequence[LineScope | None] | None, products: int) -> np.ndarray | None:
    """(rows, products) bool, or None when no row is on a line."""
    if scopes is None:
        return None
    return np.stack([np.ones(products, dtype=bool) if scope is None else scope.mask for scope in scopes])
