"""Fitting the head's nodes: what training, enrolment and open-set calibration share.

A head is a set of nodes (the categories, then one product classifier per category; or one flat node); each
node's classifier is chosen by cross-validation (`tune_node`) on folds that never split a photo from its
synthetic copies (`photo_folds`), then fitted on all its rows (`fit_nodes`). Thresholds come from
`calibrate_threshold`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from models.answer.classifiers import TEMPERED_KINDS, Candidate, Classifier, fit_candidate, fit_temperature, softmax
from models.answer.head import CATEGORY_FIRST, FLAT, ProductHead
from models.train.report import precision_by_threshold


def calibrate_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float) -> float:
    """The lowest confidence threshold whose accepted answers are right at least `target_precision` of the time.

    Answers below the threshold become "unknown". When no threshold reaches the target, everything but the
    single most confident answer is refused (the threshold is the highest confidence seen).
    """
    if len(confidence) == 0:
        return 0.5
    thresholds, _, precision = precision_by_threshold(confidence, correct)
    ok = np.flatnonzero(precision >= target_precision)
    return float(thresholds[ok[-1]]) if len(ok) else float(thresholds[0])


DEFAULT_CANDIDATE = Candidate("logistic", 10.0)  # with too few photos per product to cross-validate


@dataclass(frozen=True, slots=True)
class Node:
    """One classifier of the head: `scope` None is the top level; `rows` are the rows it trains on."""

    scope: str | None
    rows: np.ndarray  # bool over all rows
    targets: np.ndarray  # class of every row at this level (category or product)


@dataclass(frozen=True, slots=True)
class Tuned:
    candidate: Candidate
    classes: np.ndarray
    oof: np.ndarray  # (real rows, classes) out-of-fold probabilities of the chosen candidate
    temperature: float
    scores: dict[str, float]  # macro-F1 of every candidate tried


def head_nodes(all_labels: np.ndarray, categories: np.ndarray, structure: str) -> list[Node]:
    everything = np.ones(len(all_labels), dtype=bool)
    if structure == FLAT:
        return [Node(None, everything, all_labels)]
    nodes = [Node(None, everything, categories)]
    for category in np.unique(categories):
        inside = categories == category
        if len(np.unique(all_labels[inside])) > 1:
            nodes.append(Node(str(category), inside, all_labels))
    return nodes


def tune_node(
    node: Node,
    features: np.ndarray,
    real: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    search: Sequence[Candidate],
    *,
    seed: int,
    tick: Callable[[], None],
) -> Tuned:
    """Every candidate through the folds; the best macro-F1 on this node's real photos wins.

    Out-of-fold answers are kept for every real photo (also those of other categories: category-first
    multiplies them by the category's probability) so thresholds can be calibrated on the whole head.

    A logistic regression starts from the one fitted on the same fold with the next smaller C and the same
    preprocessing (a regularisation path, as scikit-learn's LogisticRegressionCV walks it; `search` lists each
    kind's C in increasing order): the same fits to the solver's tolerance, a quarter fewer iterations.
    """
    classes = np.unique(node.targets[node.rows])
    scored = node.rows[real]
    truth = node.targets[real]
    best: Tuned | None = None
    best_score = -1.0
    scores: dict[str, float] = {}
    path: dict[tuple[int, str], Classifier] = {}  # the last logistic regression of each fold and preprocessing
    for candidate in search:  # fits run in series: BLAS already uses every core (threads measured no faster)
        svm = candidate.kind in TEMPERED_KINDS  # decisions here; probabilities once the temperature is known
        answers = np.zeros((len(real), len(classes)))
        for fold, (fold_rows, held_out) in enumerate(splits):
            train_rows = fold_rows[node.rows[fold_rows]]  # this node's rows of the fold's training part
            on_path = (fold, candidate.preprocessing)
            classifier = fit_candidate(
                candidate, features[train_rows], node.targets[train_rows], seed=seed, start=path.get(on_path)
            )
            if candidate.kind == "logistic":
                path[on_path] = classifier
            apply = classifier.decision if svm else classifier.probabilities
            columns = np.searchsorted(classes, np.asarray(classifier.classes))
            answers[np.ix_(held_out, columns)] = apply(features[real[held_out]])
            tick()
        temperature = 1.0
        if svm:
            temperature = fit_temperature(answers[scored], np.searchsorted(classes, truth[scored]))
            answers = softmax(answers * temperature)
        predicted = classes[answers[scored].argmax(axis=1)]
        score = float(f1_score(truth[scored], predicted, average="macro"))
        scores[candidate.label] = round(score, 4)
        if score > best_score:
            best, best_score = Tuned(candidate, classes, answers, temperature, scores), score
    assert best is not None
    return best


TUNING_PHOTOS_PER_PRODUCT = 10  # a large catalog is tuned on at most this many photos of each product sampled
MIN_TUNING_PHOTOS = 5  # a product with fewer photos would cut every node's folds to its count


def canonical_order(labels: np.ndarray, photo_keys: np.ndarray | None = None) -> np.ndarray:
    """Row indices by product, then by each row's photo key (its sha256; a photo's synthetic copies share it and
    keep their order after it): an order that does not depend on the order the rows came in.

    The folds are drawn over positions (StratifiedKFold shuffles them, the tuning sample draws photos), so the same
    photos read in another order would be chosen and calibrated on other folds: a training reads them folder by
    folder, a consolidation the version's stored rows (the trained products first, then each enrolment's). Without
    keys, by product alone (each product's rows in the order given)."""
    labels = np.asarray(labels).astype(str)
    keys = (labels,) if photo_keys is None else (np.asarray(photo_keys).astype(str), labels)
    order: np.ndarray = np.lexsort(keys)  # stable: rows with the same keys keep their order
    return order


def canonical_sample(  # noqa: PLR0917
    labels: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    photos: int | None,
    seed: int,
    categories: np.ndarray | None = None,
    photo_keys: np.ndarray | None = None,
) -> np.ndarray:
    """tuning_sample drawn over the rows in canonical_order: the indices of the rows it keeps, in that order. The
    choices and calibrations that cross-validate (the recipe, the search, a refit's novelty score) take their rows
    so, and make the same folds of the same photos whatever order the photos came in."""
    order = canonical_order(labels, photo_keys)
    in_order = None if categories is None else np.asarray(categories)[order]
    kept: np.ndarray = order[tuning_sample(labels[order], groups[order], synthetic[order], photos, seed, in_order)]
    return kept


def tuning_sample(  # noqa: PLR0917
    labels: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    photos: int | None,
    seed: int,
    categories: np.ndarray | None = None,
) -> np.ndarray:
    """Rows to cross-validate on: every row when the catalog has at most `photos` photos; else whole products.

    Each product keeps up to TUNING_PHOTOS_PER_PRODUCT photos (drawn at random); products with fewer than
    MIN_TUNING_PHOTOS photos (fewer folds for all) are left out when two others remain. When that is still more
    than `photos`, whole categories are taken in random order, each that still fits, so a look-alike is tuned
    against its siblings. A catalog whose categories are too large for two of them to fit is sampled by whole
    products instead; the budget is at least two products' photos. Copies go with their photo. The old sample (a
    stratified `photos` photos) left 3 photos a product at 1,000 products and could not be drawn at all past
    `photos` products.
    """
    real = np.flatnonzero(~synthetic)
    if photos is None or len(real) <= photos:
        return np.ones(len(labels), dtype=bool)
    rng = np.random.default_rng(seed)
    kept = _some_photos_of_each(real, labels[real], rng)
    if len(kept) > photos:
        names, counts = np.unique(labels[kept], return_counts=True)
        enough = names[counts >= min(MIN_TUNING_PHOTOS, counts.max())]
        if len(enough) >= 2:
            kept = kept[np.isin(labels[kept], enough)]
        budget = max(photos, 2 * TUNING_PHOTOS_PER_PRODUCT)
        units = labels[kept] if categories is None else categories[kept]
        chosen = _whole_units(units, budget, rng)
        if categories is not None and len(np.unique(units[chosen])) < 2:
            chosen = _whole_units(labels[kept], budget, rng)
        kept = kept[chosen]
    return np.isin(groups, groups[kept])


def _some_photos_of_each(real: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of `real` keeping at most TUNING_PHOTOS_PER_PRODUCT photos of each product, drawn at random."""
    shuffled = rng.permutation(len(real))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]  # by product, random within one
    _, starts = np.unique(labels[order], return_index=True)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))  # place in its product
    return np.sort(real[order[rank < TUNING_PHOTOS_PER_PRODUCT]])


def _whole_units(units: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of whole units (categories or products), drawn at random, that fit in `budget` photos."""
    names, sizes = np.unique(units, return_counts=True)
    taken: list[str] = []
    left = budget
    for index in rng.permutation(len(names)):
        if sizes[index] <= left:
            taken.append(names[index])
            left -= int(sizes[index])
    return np.flatnonzero(np.isin(units, taken))


def resolve_structure(structure: str, categories: np.ndarray) -> str:
    """The head structure to fit: category-first needs two categories (one would always be answered)."""
    if structure == CATEGORY_FIRST and len(np.unique(categories)) < 2:
        return FLAT
    return structure


def fold_count(labels: np.ndarray) -> int:
    """Stratified folds over the real photos: five, or as many as the rarest product has photos (<2: no CV)."""
    _, counts = np.unique(labels, return_counts=True)
    return int(min(5, counts.min()))


def photo_folds(
    real: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds as (training rows, held-out positions in `real`).

    `real` indexes the real photos among all rows, `labels` are their products, `groups` names every row's
    photo. A fold holds out real photos and trains on every row (photo or synthetic copy) whose photo it does
    not hold out, so no photo is scored by a classifier that saw its copies.
    """
    splits = []
    for _, held_out in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(real, labels):
        held_out_groups = groups[real[held_out]]
        splits.append((np.flatnonzero(~np.isin(groups, held_out_groups)), held_out))
    return splits


def fit_nodes(
    nodes: Sequence[Node],
    chosen: Mapping[str | None, tuple[Candidate, float]],
    features: np.ndarray,
    seed: int,
    starts: Mapping[str | None, Classifier] | None = None,
) -> dict[str | None, Classifier]:
    """Fit each node's chosen candidate on all its rows (an SVM with its cross-validated temperature). `starts`: a
    head's classifiers of the same structure, fitted before on most of these rows, that each node's logistic
    regression starts from (fit_candidate): a consolidation's nodes from the version's own."""
    fitted: dict[str | None, Classifier] = {}
    for node in nodes:
        candidate, temperature = chosen[node.scope]
        start = (starts or {}).get(node.scope)
        classifier = fit_candidate(candidate, features[node.rows], node.targets[node.rows], seed=seed, start=start)
        fitted[node.scope] = (
            classifier.with_temperature(temperature) if candidate.kind in TEMPERED_KINDS else classifier
        )
    return fitted


def node_starts(head: ProductHead | None, structure: str) -> Mapping[str | None, Classifier] | None:
    """The classifiers of `head` for fit_nodes to start from: None without a head, or when its structure is not
    the one being fitted (a flat node's weights are no start for a category's)."""
    return head.classifiers if head is not None and head.structure == structure else None
