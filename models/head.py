"""The classification head and its decisions: product probabilities, category level, and "unknown".

The head is a multinomial logistic regression stored as plain arrays, so loading it never unpickles.
Category confidence is the sum of its products' probabilities; a frame can be "category known,
product unknown" when the category is sure but no single product is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RECOGNIZED = "recognized"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    product: str | None
    category: str | None
    confidence: float
    category_confidence: float
    top_k: list[dict[str, Any]]


@dataclass(frozen=True)
class ProductHead:
    products: tuple[str, ...]
    categories: tuple[str, ...]  # category of each product, aligned with `products`
    coef: np.ndarray  # (P, D)
    intercept: np.ndarray  # (P,)
    product_threshold: float = 0.5
    category_threshold: float = 0.5

    def __post_init__(self) -> None:
        count = len(self.products)
        if count < 2 or len(self.categories) != count:
            raise ValueError("a head needs at least two products, each with a category")
        if self.coef.shape[0] != count or self.intercept.shape != (count,):
            raise ValueError(f"coef {self.coef.shape} / intercept {self.intercept.shape} do not fit {count} products")

    @classmethod
    def from_logistic_regression(cls, model: Any, categories_of: dict[str, str], **thresholds: float) -> ProductHead:
        """Take the arrays out of a fitted sklearn LogisticRegression (binary or multinomial)."""
        products = tuple(str(label) for label in model.classes_)
        coef = np.asarray(model.coef_, dtype=np.float32)
        intercept = np.asarray(model.intercept_, dtype=np.float32)
        if coef.shape[0] == 1:  # binary: sigmoid(z) == softmax([-z/2, z/2])
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
        return cls(products, tuple(categories_of[p] for p in products), coef, intercept, **thresholds)

    @property
    def feature_dim(self) -> int:
        return int(self.coef.shape[1])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = features.astype(np.float32) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    def decide(self, probabilities: Sequence[float], *, top_k: int = 5) -> Decision:
        probs = np.asarray(probabilities, dtype=np.float64)
        by_category: dict[str, float] = {}
        for category, p in zip(self.categories, probs, strict=True):
            by_category[category] = by_category.get(category, 0.0) + float(p)
        category, category_conf = max(by_category.items(), key=lambda item: item[1])
        in_category = [i for i, c in enumerate(self.categories) if c == category]
        best = max(in_category, key=lambda i: probs[i])
        confidence = float(probs[best])
        order = np.argsort(-probs)[:top_k]
        ranked = [
            {"product": self.products[i], "category": self.categories[i], "score": round(float(probs[i]), 6)}
            for i in order
        ]
        if confidence >= self.product_threshold:
            return Decision(RECOGNIZED, self.products[best], category, confidence, category_conf, ranked)
        if category_conf >= self.category_threshold:
            return Decision(UNKNOWN, None, category, confidence, category_conf, ranked)
        return Decision(UNKNOWN, None, None, confidence, category_conf, ranked)
