"""The classification head and its decisions: product probabilities, category level, and "unknown".

A head is either flat (one classifier over every product) or category-first (a classifier over the
categories, then one classifier per category over its products). Either way it gives, for every product,
the probability that the frame shows it: for category-first, P(category) x P(product | category). A
category's confidence is the sum of its products' probabilities (for category-first exactly P(category)),
so a frame can be "category known, product unknown" when the category is sure but no single product is.
A category-first head of many categories evaluates, for a frame, only the category nodes that hold all but
UNEVALUATED_MASS of its probability (and, on a line, every category of the line's products): a category below that
shares its (at most 0.1%) probability evenly among its products, so a frame costs about the same at ten thousand
products as at a hundred, and its answer, confidence and margin stay those of every node evaluated.
Every classifier is plain arrays (models/answer/classifiers.py): loading a head never unpickles.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.answer.classifiers import Classifier
from models.answer.refinements import Refinement, RefinementLayout, added_products, check_order
from models.errors import InvalidModel

RECOGNIZED = "recognized"
UNKNOWN = "unknown"
FLAT = "flat"
CATEGORY_FIRST = "category-first"
STRUCTURES = (CATEGORY_FIRST, FLAT)
# a category-first head of more category nodes than this evaluates only a frame's likely categories
SOME_CATEGORIES_FROM = 16
UNEVALUATED_MASS = 1e-3


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    product: str | None
    category: str | None
    confidence: float
    category_confidence: float
    top_k: list[dict[str, Any]]
    # 0..1, how unlike every enrolled product the frame looks (None for a model trained without a gallery)
    novelty: float | None = None
    # the nearest enrolled photos, best first: {"product", "photo", "similarity"}
    matches: tuple[dict[str, Any], ...] = ()
    novel: bool = False  # refused because its novelty reached the model's threshold


@dataclass(frozen=True)
class ProductHead:
    products: tuple[str, ...]
    categories: tuple[str, ...]  # category of each product, aligned with `products`
    # Flat: {None: classifier over all products}. Category-first: {None: classifier over categories, and
    # category: classifier over its products} for every category with two or more products.
    classifiers: Mapping[str | None, Classifier]
    structure: str = FLAT
    product_threshold: float = 0.5
    category_threshold: float = 0.5
    # products enrolled quickly, after the nodes were fitted (models.answer.refinements): the products they add
    # come last in `products`, in order
    refinements: tuple[Refinement, ...] = ()

    def __post_init__(self) -> None:
        """InvalidModel when the parts do not make a head that can answer."""
        count = len(self.products)
        if count < 2 or len(self.categories) != count or len(set(self.products)) != count:
            raise InvalidModel("a head needs at least two products, each once and with a category")
        if self.structure not in STRUCTURES:
            raise InvalidModel(f"unknown head structure {self.structure!r}")
        added = added_products(self.refinements)
        if list(self.products[count - len(added) :]) != added or count - len(added) < 2:
            raise InvalidModel("the products the refinements add must come last, in order, after two of the nodes'")
        check_order(self.base_products, self.refinements)
        self._check_nodes()
        dims = {classifier.input_dim for classifier in self.classifiers.values()}
        dims |= {refinement.classifier.input_dim for refinement in self.refinements}
        if len(dims) != 1:
            raise InvalidModel(f"the head's classifiers expect different feature sizes: {sorted(dims)}")
        try:  # a head that cannot answer must fail here, at load, not on every frame
            probe = self.probabilities(np.zeros((1, self.feature_dim), dtype=np.float32))
        except (KeyError, IndexError, ValueError, TypeError, InvalidModel) as exc:  # arrays of the wrong shape
            raise InvalidModel(f"the head's classifiers cannot be applied: {exc!r}") from exc
        if probe.shape != (1, count) or not np.isfinite(probe).all():
            raise InvalidModel(f"the head's classifiers give {probe.shape} probabilities for {count} products")
        self._probe_refinements()

    def _probe_refinements(self) -> None:
        """Each refinement's classifier applied once: a frame skips those whose group it cannot be (RefinementLayout),
        so the probe above may not reach them, and one that cannot answer must fail at load all the same."""
        zeros = np.zeros((1, self.feature_dim), dtype=np.float32)
        for refinement in self.refinements:
            try:
                shares = refinement.classifier.probabilities(zeros)
            except (KeyError, IndexError, ValueError, TypeError, InvalidModel) as exc:
                raise InvalidModel(f"the refinement for {refinement.product} cannot be applied: {exc!r}") from exc
            expected = (1, len(refinement.classifier.classes))
            if shares.shape != expected or not np.isfinite(shares).all():
                raise InvalidModel(
                    f"the refinement for {refinement.product} gives {shares.shape} shares, not {expected}"
                )

    def _check_nodes(self) -> None:
        """InvalidModel unless the nodes cover the products they were fitted on (all but those refinements add)."""
        top = self.classifiers.get(None)
        if top is None:
            raise InvalidModel("a head needs its top-level classifier")
        base = len(self.base_products)
        products, categories = self.products[:base], self.categories[:base]
        expected = set(categories) if self.structure == CATEGORY_FIRST else set(products)
        if set(top.classes) != expected:
            raise InvalidModel(f"the top-level classifier knows {sorted(top.classes)}, the head {sorted(expected)}")
        if self.structure == CATEGORY_FIRST:
            for category in set(categories):
                members = {p for p, c in zip(products, categories, strict=True) if c == category}
                inner = self.classifiers.get(category)
                if len(members) > 1 and (inner is None or set(inner.classes) != members):
                    raise InvalidModel(f"category {category!r} needs a classifier over {sorted(members)}")

    @property
    def base_products(self) -> tuple[str, ...]:
        """The products the nodes were fitted on: all but those the refinements add."""
        return self.products[: len(self.products) - len(added_products(self.refinements))]

    @functools.cached_property
    def category_names(self) -> tuple[str, ...]:
        """The categories, each once, in head order (the numbering of category_codes)."""
        return tuple(dict.fromkeys(self.categories))

    @property
    def feature_dim(self) -> int:
        return self.classifiers[None].input_dim

    def probabilities(self, features: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """(N, products) probabilities, columns in `self.products` order. `allowed` (N, products) bool, the rows'
        lines: a head that evaluates a frame's likely categories only evaluates every category of its line's
        products too (the caller renormalises over them)."""
        x = np.asarray(features, dtype=np.float32)
        nodes = self.unrefined(x, allowed)
        return self._refinement_layout.apply(nodes, x, allowed) if self.refinements else nodes

    def unrefined(self, features: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """The nodes' (N, products) probabilities before any refinement (the products refinements add: 0)."""
        x = np.asarray(features, dtype=np.float32)
        base = len(self.base_products)
        if self.structure == CATEGORY_FIRST and len(self.classifiers) > SOME_CATEGORIES_FROM:
            nodes = self._likely_nodes(x, None if allowed is None else np.asarray(allowed, dtype=bool)[:, :base])
        else:
            levels = {
                scope: (classifier.classes, classifier.probabilities(x))
                for scope, classifier in self.classifiers.items()
            }
            categories_of = dict(zip(self.products[:base], self.categories[:base], strict=True))
            nodes = compose(self.products[:base], categories_of, self.structure, levels)
        if not self.refinements:
            return nodes
        everything = np.zeros((len(nodes), len(self.products)), dtype=np.float64)
        everything[:, :base] = nodes
        return everything

    def _likely_nodes(self, x: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        """compose()'s category-first probabilities where, for each row, only the categories that hold all but
        UNEVALUATED_MASS of its probability (and those of its line's products) are evaluated; each other category
        shares its probability evenly among its products. A row's values do not depend on the rows beside it."""
        top_probs = self.classifiers[None].probabilities(x)
        member_of, sizes, inner_nodes = self._category_layout
        result: np.ndarray = (top_probs[:, member_of] / sizes[member_of]).astype(np.float64)
        ordered = np.sort(top_probs, axis=1)[:, ::-1]
        kept_per_row = (np.cumsum(ordered, axis=1) < 1.0 - UNEVALUATED_MASS).sum(axis=1) + 1
        floor = ordered[np.arange(len(ordered)), np.minimum(kept_per_row, ordered.shape[1]) - 1]
        likely = top_probs >= floor[:, None]  # (N, categories)
        if allowed is not None:
            for row in np.flatnonzero(~allowed.all(axis=1)).tolist():  # a row on a line
                likely[row, member_of[allowed[row]]] = True
        for position in np.flatnonzero(likely.any(axis=0)).tolist():
            node = inner_nodes.get(position)
            if node is not None:
                classifier, columns = node
                rows = np.flatnonzero(likely[:, position])
                result[np.ix_(rows, columns)] = top_probs[rows, position, None] * classifier.probabilities(x[rows])
        return result

    @functools.cached_property
    def _refinement_layout(self) -> RefinementLayout:
        return RefinementLayout(self.products, self.refinements)

    @functools.cached_property
    def _category_layout(self) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[Classifier, np.ndarray]]]:
        """For the base products: each one's category's position among the top node's classes, each position's
        number of products, and each position's node with the columns of its classes."""
        base = len(self.base_products)
        position = {category: i for i, category in enumerate(self.classifiers[None].classes)}
        member_of = np.array([position[c] for c in self.categories[:base]], dtype=np.int64)
        sizes = np.bincount(member_of, minlength=len(position)).astype(np.float64)
        column = {product: i for i, product in enumerate(self.products[:base])}
        inner = {
            position[scope]: (classifier, np.array([column[p] for p in classifier.classes], dtype=np.int64))
            for scope, classifier in self.classifiers.items()
            if scope is not None
        }
        return member_of, sizes, inner

    def refined_by(self, refinement: Refinement, category: str) -> ProductHead:
        """This head with one more refinement (and its product, of `category`, when it adds one)."""
        products, categories = self.products, self.categories
        if refinement.new:
            products, categories = (*products, refinement.product), (*categories, category)
        return ProductHead(
            products,
            categories,
            self.classifiers,
            structure=self.structure,
            product_threshold=self.product_threshold,
            category_threshold=self.category_threshold,
            refinements=(*self.refinements, refinement),
        )

    def decide(
        self,
        probabilities: Sequence[float],
        *,
        top_k: int = 5,
        novelty: float | None = None,
        novelty_threshold: float | None = None,
        matches: tuple[dict[str, Any], ...] = (),
        allowed: np.ndarray | None = None,
    ) -> Decision:
        """The answer for one frame's probabilities: recognised when the best product of the likeliest category
        reaches the product threshold and, for a model with a novelty score, the frame is not novel. `allowed`
        (a mask over the products: a line's) keeps the others out of the ranking; the caller has renormalised
        the probabilities over it (models.answer.answerer)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        codes = category_codes(self.categories)
        by_category = np.bincount(codes, weights=probs, minlength=len(self.category_names))
        code = int(by_category.argmax())  # ties: the category first in head order
        category, category_conf = self.category_names[code], float(by_category[code])
        best = int(np.where(codes == code, probs, -1.0).argmax())  # ties: the first product
        confidence = float(probs[best])
        ranked = [
            {"product": self.products[i], "category": self.categories[i], "score": round(float(probs[i]), 6)}
            for i in top_indices(probs, top_k, allowed)
        ]
        score = None if novelty is None else round(float(novelty), 6)
        novel = novelty is not None and novelty_threshold is not None and novelty >= novelty_threshold
        if confidence >= self.product_threshold and not novel:
            return Decision(
                RECOGNIZED, self.products[best], category, confidence, category_conf, ranked, score, matches
            )
        known = category if category_conf >= self.category_threshold else None
        return Decision(UNKNOWN, None, known, confidence, category_conf, ranked, score, matches, novel)

    def describe(self) -> dict[str, Any]:
        """The head's shape for the manifest: structure and each classifier's kind and classes."""
        return {
            "structure": self.structure,
            "classifiers": {
                ("" if key is None else key): classifier.record() for key, classifier in self.classifiers.items()
            },
            "refinements": [refinement.record() for refinement in self.refinements],
        }


@functools.lru_cache(maxsize=16)
def category_codes(categories: tuple[str, ...]) -> np.ndarray:
    """(P,) each product's category as a number, numbered in order of first appearance (head order)."""
    numbers: dict[str, int] = {}
    codes = np.array([numbers.setdefault(c, len(numbers)) for c in categories], dtype=np.int64)
    codes.flags.writeable = False
    return codes


def category_mass(probabilities: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N, categories) each category's share of each row's probability."""
    probs = np.atleast_2d(probabilities)
    count = int(codes.max()) + 1 if len(codes) else 0
    mass = np.zeros((len(probs), count), dtype=np.float64)
    for row, values in enumerate(probs):
        mass[row] = np.bincount(codes, weights=values, minlength=count)
    return mass


def top_indices(probabilities: np.ndarray, count: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """The indices of the `count` highest probabilities among those `allowed` allows, highest first (ties in index
    order), without sorting them all."""
    values = probabilities if allowed is None else np.where(allowed, probabilities, -np.inf)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.arange(len(values))
    if len(values) > 4 * count:
        kth = np.partition(values, len(values) - count)[len(values) - count]
        candidates = np.flatnonzero(values >= kth)
    candidates = candidates[np.isfinite(values[candidates])]
    ordered: np.ndarray = candidates[np.argsort(-values[candidates], kind="stable")][:count]
    return ordered


def compose(
    products: Sequence[str],
    categories_of: Mapping[str, str],
    structure: str,
    levels: Mapping[str | None, tuple[Sequence[str], np.ndarray]],
) -> np.ndarray:
    """(N, products) probabilities from each classifier's (classes, probabilities); `levels[None]` is the top.

    Flat: the top level's columns. Category-first: P(category) x P(product | category), and P(category)
    alone for a category's only product. Serves the head, and training's out-of-fold answers alike.
    """
    top_classes, top_probs = levels[None]
    column = {product: index for index, product in enumerate(products)}
    result = np.zeros((len(top_probs), len(products)), dtype=np.float64)
    if structure == FLAT:
        result[:, [column[p] for p in top_classes]] = top_probs
        return result
    for position, category in enumerate(top_classes):
        if category in levels:
            inner_classes, inner_probs = levels[category]
            result[:, [column[p] for p in inner_classes]] = top_probs[:, [position]] * inner_probs
        else:  # a category with one product
            (only,) = [p for p in products if categories_of[p] == category]
            result[:, column[only]] = top_probs[:, position]
    return result


def saved_arrays(head: ProductHead) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The head as npz arrays (`c<i>_<name>`) and one JSON record per classifier (`scope`: null or a category)."""
    arrays: dict[str, np.ndarray] = {}
    records: list[dict[str, Any]] = []
    for index, (scope, classifier) in enumerate(head.classifiers.items()):
        records.append({"scope": scope, **classifier.record()})
        arrays.update({f"c{index}_{name}": value for name, value in classifier.arrays.items()})
    return arrays, records


def restored_classifiers(
    arrays: Mapping[str, np.ndarray], records: Sequence[Mapping[str, Any]]
) -> dict[str | None, Classifier]:
    """The classifiers of a stored head (see saved_arrays); InvalidModel when the records are not a list of them."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise InvalidModel("the head's classifier records are not a list")
    if not all(isinstance(record, Mapping) for record in records):
        raise InvalidModel("the head's classifier records are not all objects")
    classifiers: dict[str | None, Classifier] = {}
    for index, record in enumerate(records):
        prefix = f"c{index}_"
        own = {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}
        scope = record.get("scope")
        classifiers[None if scope is None else str(scope)] = Classifier.from_record(record, own)
    return classifiers


def logistic_classifier(products: Sequence[str], coef: np.ndarray, intercept: np.ndarray) -> Classifier:
    """A multinomial logistic regression given as arrays (the head format of the first model directories)."""
    coef = np.asarray(coef, dtype=np.float32)
    params = {"steps": [], "input_dim": int(coef.shape[1])}
    return Classifier(
        "logistic", tuple(products), {"coef": coef, "intercept": np.asarray(intercept, np.float32)}, params
    )
