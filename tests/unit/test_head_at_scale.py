"""A head of many categories: a frame evaluates only its likely category nodes, and the vectorised decision
gives what the plain one did (the reference below is the decision before it was vectorised)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.answer import head as head_module
from models.answer.head import CATEGORY_FIRST, UNEVALUATED_MASS, ProductHead, compose, logistic_classifier, top_indices

CATEGORIES = 30
PER_CATEGORY = 3
DIM = 24


def many_categories(seed: int = 0) -> ProductHead:
    rng = np.random.default_rng(seed)
    categories = [f"family-{c:02d}" for c in range(CATEGORIES)]
    products = [f"part-{c:02d}-{i}" for c in range(CATEGORIES) for i in range(PER_CATEGORY)]
    classifiers = {None: logistic_classifier(categories, 6 * rng.normal(size=(CATEGORIES, DIM)), np.zeros(CATEGORIES))}
    for c, category in enumerate(categories):
        members = products[c * PER_CATEGORY : (c + 1) * PER_CATEGORY]
        classifiers[category] = logistic_classifier(members, 3 * rng.normal(size=(PER_CATEGORY, DIM)), np.zeros(3))
    return ProductHead(
        tuple(products),
        tuple(c for c in categories for _ in range(PER_CATEGORY)),
        classifiers,
        structure=CATEGORY_FIRST,
    )


def every_node(head: ProductHead, x: np.ndarray) -> np.ndarray:
    levels = {scope: (c.classes, c.probabilities(x)) for scope, c in head.classifiers.items()}
    return compose(head.products, dict(zip(head.products, head.categories, strict=True)), head.structure, levels)


def test_a_head_of_many_categories_evaluates_only_the_likely_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    head = many_categories()
    assert len(head.classifiers) > head_module.SOME_CATEGORIES_FROM
    x = np.random.default_rng(1).normal(size=(6, DIM)).astype(np.float32)
    calls: list[Any] = []
    original = type(head.classifiers[None]).probabilities
    monkeypatch.setattr(
        type(head.classifiers[None]), "probabilities", lambda self, f: calls.append(self) or original(self, f)
    )
    fast = head.probabilities(x)
    evaluated = len(calls)
    exact = every_node(head, x)
    assert evaluated < len(head.classifiers) / 2  # the top node and a few likely categories, not all 31
    np.testing.assert_allclose(fast.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(fast - exact).sum(axis=1).max() <= 2 * UNEVALUATED_MASS
    assert (fast.argmax(axis=1) == exact.argmax(axis=1)).all()
    top = np.sort(exact, axis=1)[:, -2:]
    np.testing.assert_allclose(np.sort(fast, axis=1)[:, -2:], top, atol=UNEVALUATED_MASS)


def test_a_head_of_few_categories_evaluates_every_node() -> None:
    head = many_categories()
    few = ProductHead(
        head.products[:9],
        head.categories[:9],
        {
            None: logistic_classifier(head.categories[:9:3], head.classifiers[None].arrays["coef"][:3], np.zeros(3)),
            **{c: head.classifiers[c] for c in head.categories[:9:3]},
        },
        structure=CATEGORY_FIRST,
    )
    x = np.random.default_rng(2).normal(size=(4, DIM)).astype(np.float32)
    np.testing.assert_allclose(few.probabilities(x), every_node(few, x), atol=1e-12)


def reference_decision(head: ProductHead, probs: np.ndarray, top_k: int, allowed: np.ndarray | None) -> tuple[Any, ...]:
    """ProductHead.decide's choices as its plain Python loops made them."""
    by_category: dict[str, float] = {}
    for category, p in zip(head.categories, probs, strict=True):
        by_category[category] = by_category.get(category, 0.0) + float(p)
    category, category_conf = max(by_category.items(), key=lambda item: item[1])
    in_category = [i for i, c in enumerate(head.categories) if c == category]
    best = max(in_category, key=lambda i: probs[i])
    order = np.argsort(-probs, kind="stable")
    order = (order if allowed is None else order[allowed[order]])[:top_k]
    return category, category_conf, head.products[best], [head.products[i] for i in order]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=90, max_size=90),
    st.integers(1, 8),
    st.one_of(st.none(), st.lists(st.booleans(), min_size=90, max_size=90)),
)
def test_the_decision_is_the_plain_loops_one(weights: list[int], top_k: int, allowed: list[bool] | None) -> None:
    head = many_categories()
    probs = np.asarray(weights, dtype=np.float64) + 1e-9  # coarse values: many ties
    probs /= probs.sum()
    mask = None if allowed is None else np.asarray(allowed, dtype=bool)
    decision = head.decide(probs, top_k=top_k, allowed=mask)
    category, category_conf, best, ranked = reference_decision(head, probs, top_k, mask)
    assert decision.category in (category, None) and decision.category_confidence == pytest.approx(category_conf)
    assert (decision.product or best) == best and decision.confidence == pytest.approx(probs[head.products.index(best)])
    assert [r["product"] for r in decision.top_k] == ranked


def test_top_indices_are_a_stable_sorts_first() -> None:
    values = np.array([0.1, 0.3, 0.3, 0.0, 0.3, 0.2, 0.1, 0.0, 0.0, 0.05, 0.3])
    assert top_indices(values, 3).tolist() == [1, 2, 4]
    assert top_indices(values, 2, values < 0.25).tolist() == [5, 0]
    assert top_indices(values, 0).tolist() == []


def test_a_frames_probabilities_do_not_depend_on_the_frames_beside_it() -> None:
    head = many_categories()
    x = np.random.default_rng(3).normal(size=(8, DIM)).astype(np.float32)
    together = head.probabilities(x)
    for i in range(len(x)):
        np.testing.assert_allclose(head.probabilities(x[i : i + 1])[0], together[i], rtol=1e-4, atol=1e-12)


def test_a_frame_on_a_line_evaluates_its_lines_categories_however_unlikely() -> None:
    head = many_categories()
    x = np.random.default_rng(4).normal(size=(3, DIM)).astype(np.float32)
    exact = every_node(head, x)
    unlikely = int(np.argmin(exact[0]))  # a product of a category far below the cut for frame 0
    category = head.categories[unlikely]
    line = np.array([c == category for c in head.categories])
    allowed = np.ones((3, len(head.products)), dtype=bool)
    allowed[0] = line
    fast = head.probabilities(x, allowed)
    np.testing.assert_allclose(fast[0, line], exact[0, line], rtol=1e-6)  # its node evaluated, not shared evenly
    others = head.probabilities(x[1:])  # the frames without a line, as they are without one
    np.testing.assert_allclose(fast[1:], others, rtol=1e-4, atol=1e-12)
