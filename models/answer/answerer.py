"""From feature vectors to answers: the head's probabilities, the gallery's nearest photos and the novelty score.

A model version trained before galleries has a head only: its answers carry no novelty and no matches, and
"unknown" comes from the head's thresholds alone, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.answer.gallery import Gallery
from models.answer.head import Decision, ProductHead
from models.answer.novelty import NoveltyModel, answered_index, novelty_inputs


@dataclass(frozen=True)
class Answerer:
    head: ProductHead
    gallery: Gallery | None = None
    novelty: NoveltyModel | None = None

    def __post_init__(self) -> None:
        if self.novelty is not None and self.gallery is None:
            raise ValueError("a novelty score needs the gallery it was fitted with")
        if self.gallery is not None:
            if self.gallery.products != self.head.products:
                raise ValueError("the gallery's products are not the head's")
            if self.gallery.dim != self.head.feature_dim:
                raise ValueError(
                    f"the gallery holds {self.gallery.dim}-d features, the head takes {self.head.feature_dim}"
                )

    def novelty_of(self, probabilities: np.ndarray, similarities: np.ndarray) -> np.ndarray | None:
        if self.novelty is None or self.gallery is None:
            return None
        best = self.gallery.best_by_product(similarities)
        answered = answered_index(probabilities, self.head.categories)
        inputs = novelty_inputs(probabilities, best, answered, self.gallery.spread_mean, self.gallery.spread_std)
        return self.novelty.score(inputs)

    def answer(self, features: np.ndarray, *, matches: int = 3) -> list[Decision]:
        probabilities = self.head.probabilities(features)
        if self.gallery is None:
            return [self.head.decide(row) for row in probabilities]
        similarities = self.gallery.similarities(features)
        novelty = self.novelty_of(probabilities, similarities)
        nearest = self.gallery.matches(similarities, matches)
        threshold = self.novelty.threshold if self.novelty is not None else None
        return [
            self.head.decide(
                row,
                novelty=None if novelty is None else float(novelty[i]),
                novelty_threshold=threshold,
                matches=nearest[i],
            )
            for i, row in enumerate(probabilities)
        ]
