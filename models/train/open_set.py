"""Leave-products-out calibration: the novelty score and the category threshold, fitted on never-seen frames (the
score also on the known frames the folds answered wrong, where those are no more than the right ones).

Calibrating "unknown" on known products only cannot see what a never-seen product scores. Here each fold
hides whole products (and, of the others, one share of the photos): a head with the classifiers training
chose is fitted on the rest, a gallery built from the rest, and the hidden products' photos are scored as
the real never-seen frames they are, beside the held-out photos of known products. The novelty score is
fitted on those answers and its threshold set to refuse at least `refuse_unseen` of the never-seen frames.
A hidden product whose category keeps other products in its fold is the "category known, product unknown"
case: the category threshold is calibrated on the refused frames, so a refused frame names its category
only when that is right `target_precision` of the time.

A tuned backbone (models.train.tuning) learned every product it would hide here, so a tuned training passes its
tuning folds instead (HiddenFold): each hides the products its network never learned and scores the photos it held
out, on that network's features.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from sklearn.model_selection import StratifiedKFold

from models.answer.classifiers import Candidate
from models.answer.gallery import build_gallery
from models.answer.head import ProductHead
from models.answer.novelty import (
    ALL_INPUTS,
    DISTANCE,
    INPUTS,
    NoveltyModel,
    answered_index,
    fit_novelty,
    novelty_inputs,
    threshold_for,
    with_operating_point,
)
from models.train.node_fitting import DEFAULT_CANDIDATE, calibrate_threshold, fit_nodes, head_nodes, resolve_structure
from models.train.object_calibration import calibrate_objects
from models.train.report import confused_pairs, open_set_by_product, open_set_curve

logger = logging.getLogger(__name__)

MAX_FOLDS = 5
WRONG_COST = 2.0  # a known frame answered wrong counts as losing two answered right (distance_verdict)
DISTANCE_MARGIN = 0.01
MIN_HIDDEN_PRODUCTS = 20  # never-seen products in the folds, fewest for distance_verdict to compare


@dataclass(frozen=True)
class FoldAnswers:
    """Every scored frame of the leave-products-out folds."""

    products: np.ndarray  # true product
    unseen: np.ndarray  # its product was hidden in its fold
    correct: np.ndarray  # answered with its own product
    category_conf: np.ndarray
    category_hit: np.ndarray  # the answered category is its own (never, for a hidden category)
    inputs: np.ndarray  # the novelty score's inputs (ALL_INPUTS; the product distance NaN where a fold has none, or
    # the folds hide too few products for distance_verdict to compare it)
    predicted: np.ndarray
    fold: np.ndarray  # the fold that scored it


@dataclass(frozen=True)
class OpenSetCalibration:
    novelty: NoveltyModel
    category_threshold: float
    report: dict[str, Any]
    scores: np.ndarray  # the novelty of every fold frame
    unseen: np.ndarray  # which of them were never seen

    def at(self, refuse_unseen: float) -> NoveltyModel:
        """The same score at another operating point, from the same folds (no refit)."""
        return with_operating_point(self.novelty, self.scores, self.unseen, refuse_unseen)


class HiddenFold(NamedTuple):
    """Every row's features from a network that never learned `products` nor trained on the `known` rows' photos (a
    tuning fold's, models.train.tuning): a fold that hides those products and scores those photos as known ones
    scores both as the shipped network will score a product it never learned and a new photo of one it did."""

    products: np.ndarray
    features: np.ndarray
    known: np.ndarray  # (rows,) bool

    def sampled(self, rows: np.ndarray) -> HiddenFold:
        """The fold on the rows a (rows,) bool mask keeps, or on the rows indices name in their order (itself when
        that is every row in its own order; otherwise a copy of those rows' features, beside this fold's)."""
        every = rows.all() if rows.dtype == bool else np.array_equal(rows, np.arange(len(self.known)))
        return self if every else HiddenFold(self.products, self.features[rows], self.known[rows])


def product_groups(products: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The products each fold hides: shuffled, split into `folds` groups of near-equal size."""
    shuffled = np.random.default_rng(seed).permutation(products)
    return [group for group in np.array_split(shuffled, folds) if len(group)]


def fold_answers(  # long: one pass over the folds, each step using the last one's arrays
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    categories_of: Mapping[str, str],
    structure: str,
    chosen: Mapping[str | None, tuple[Candidate, float]],
    seed: int,
    max_per_product: int,
    hidden_folds: Sequence[HiddenFold] = (),
) -> FoldAnswers | None:
    """Answers on the folds; None when the photos cannot make them (fewer than 3 products, or 2 photos each).

    With `hidden_folds`, the folds are theirs: each hides its products and scores them and its known photos on its
    own features; otherwise up to MAX_FOLDS folds hide every product once, on `features`, each scoring a
    stratified share of the other photos as known."""
    real = np.flatnonzero(~synthetic)
    products, counts = np.unique(labels[real], return_counts=True)
    plan = _fold_plan(products, int(counts.min()), features, hidden_folds, seed)
    if not plan:
        return None
    photo_splits: list[np.ndarray | None] = [None] * len(plan)  # the tuning's folds say which photos they held out
    if plan[0][2] is None:
        stratified = StratifiedKFold(len(plan), shuffle=True, random_state=seed)
        photo_splits = [held for _, held in stratified.split(real, labels[real])]
    collected: dict[str, list[np.ndarray]] = {name: [] for name in FoldAnswers.__dataclass_fields__}
    distance_compared = hides_enough(np.concatenate([hidden for hidden, _, _ in plan]))
    for number, ((hidden, fold_x, known), held_out) in enumerate(zip(plan, photo_splits, strict=True)):
        unseen_rows = real[np.isin(labels[real], hidden)]
        scored_known = real[known[real]] if known is not None else real[held_out]
        known_rows = scored_known[~np.isin(labels[scored_known], hidden)]
        train = ~np.isin(labels, hidden) & ~np.isin(groups, groups[known_rows])
        fold_categories = np.array([categories_of[str(p)] for p in labels[train]])
        fold_structure = resolve_structure(structure, fold_categories)
        nodes = head_nodes(labels[train], fold_categories, fold_structure)
        picks = {node.scope: chosen.get(node.scope, (DEFAULT_CANDIDATE, 1.0)) for node in nodes}
        fitted = fit_nodes(nodes, picks, fold_x[train], seed)
        head_products = tuple(str(p) for p in np.unique(labels[train]))
        head = ProductHead(
            head_products, tuple(categories_of[p] for p in head_products), fitted, structure=fold_structure
        )
        train_real = np.flatnonzero(train & ~synthetic)
        gallery = build_gallery(
            fold_x[train_real],
            labels[train_real],
            [""] * len(train_real),
            [""] * len(train_real),
            head_products,
            max_per_product=max_per_product,
            seed=seed,
        )
        scored = np.concatenate([unseen_rows, known_rows])
        x = fold_x[scored]
        probs = head.probabilities(x)
        best = gallery.best_by_product(gallery.similarities(x))
        answered = answered_index(probs, head.categories)
        predicted = np.asarray(head_products)[answered]
        answered_category = np.asarray(head.categories)[answered]
        member = np.asarray(head.categories)[None, :] == answered_category[:, None]
        collected["products"].append(labels[scored])
        collected["unseen"].append(np.arange(len(scored)) < len(unseen_rows))
        collected["correct"].append(predicted == labels[scored])
        collected["category_conf"].append((probs * member).sum(axis=1))
        collected["category_hit"].append(answered_category == np.array([categories_of[str(p)] for p in labels[scored]]))
        density = gallery.density if distance_compared else None
        distance = None if density is None else density.nearest_distance(x)
        spread = gallery.spread_mean, gallery.spread_std
        collected["inputs"].append(novelty_inputs(probs, best, answered, *spread, distance))
        collected["predicted"].append(predicted)
        collected["fold"].append(np.full(len(scored), number))
    return FoldAnswers(**{name: np.concatenate(parts) for name, parts in collected.items()})


def _fold_plan(
    products: np.ndarray, fewest_photos: int, features: np.ndarray, hidden_folds: Sequence[HiddenFold], seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Each fold's hidden products, the features it scores on and which rows it scores as known (None: a share of
    the photos, stratified); none when no fold can be made (each must hide a product and leave two, and every
    product needs a photo per fold)."""
    if hidden_folds:
        plan = [(np.intersect1d(fold.products, products), fold.features, fold.known) for fold in hidden_folds]
        usable: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = [
            (hidden, x, known) for hidden, x, known in plan if len(hidden) and len(products) - len(hidden) >= 2
        ]
        return usable if fewest_photos >= 2 else []
    folds = min(MAX_FOLDS, len(products), fewest_photos)
    if folds < 2 or len(products) - -(-len(products) // folds) < 2:  # each fold must leave two products
        return []
    return [(group, features, None) for group in product_groups(products, folds, seed)]


def fit_score(answers: FoldAnswers, refuse_unseen: float) -> NoveltyModel:
    """The novelty score fitted on the folds' answers (their never-seen frames and the known ones answered wrong,
    against the known ones answered right; the never-seen frames alone where the wrong answers outnumber the right:
    fit_novelty) and its threshold: as every version's is, and the tuning's verdict. The product distance is one of
    its inputs where distance_verdict keeps it."""
    return chosen_score(answers, refuse_unseen)[0]


def chosen_score(answers: FoldAnswers, refuse_unseen: float) -> tuple[NoveltyModel, dict[str, Any] | None]:
    """fit_score's score and distance_verdict's record (None: not compared)."""
    verdict = distance_verdict(answers, refuse_unseen)
    use = ALL_INPUTS if verdict is not None and verdict["kept"] else INPUTS
    return fit_novelty(answers.inputs, answers.unseen, refuse_unseen, answered_right=answers.correct, use=use), verdict


def distance_verdict(answers: FoldAnswers, refuse_unseen: float) -> dict[str, Any] | None:
    """Whether the novelty score takes the product distance (models.answer.density) as an input: the score is fitted
    with it and without it on all folds but one and decides the frames of that one, for each fold in turn, at the
    threshold that refuses `refuse_unseen` of that fold's never-seen frames. Both then keep the promise on every
    fold, and what tells them apart is what each lets through of the known frames. It is kept where the known frames
    answered right less WRONG_COST times those answered wrong rise by at least DISTANCE_MARGIN. None where it cannot
    be compared: a fold without the distance (too few photos for a density), fewer than two folds, or fewer than
    MIN_HIDDEN_PRODUCTS products hidden in all. A score fitted on the distances of seven or eight never-seen products
    learns where those few fall, not where never-seen ones do: on the digits (8 known) it was kept and refused 49.5%
    of two other never-seen digits' photos against 77.1% without it, where the folds, each at the promise, could not
    see it (docs/performance.md)."""
    distance = answers.inputs[:, ALL_INPUTS.index(DISTANCE)]
    hidden_enough = hides_enough(answers.products[answers.unseen])
    if not np.isfinite(distance).all() or len(np.unique(answers.fold)) < 2 or not hidden_enough:
        return None
    figures = {}
    for name, use in (("without", INPUTS), ("with", ALL_INPUTS)):
        refused = _refused_out_of_fold(answers, refuse_unseen, use)
        if refused is None:
            return None
        known = ~answers.unseen
        figures[name] = {  # never-seen frames refused: at least the promise on every fold, by the thresholds
            "known_answered_right": round(float((answers.correct & ~refused)[known].mean()), 4),
            "known_answered_wrong": round(float((~answers.correct & ~refused)[known].mean()), 4),
        }
    value = {
        name: figure["known_answered_right"] - WRONG_COST * figure["known_answered_wrong"]
        for name, figure in figures.items()
    }
    kept = value["with"] >= value["without"] + DISTANCE_MARGIN
    return {**figures, "wrong_cost": WRONG_COST, "margin": DISTANCE_MARGIN, "kept": kept}


def hides_enough(hidden_products: np.ndarray) -> bool:
    """Whether folds that hide `hidden_products` (repeats allowed) hide enough for distance_verdict to compare the
    product distance: at least MIN_HIDDEN_PRODUCTS of them. fold_answers fits no density in folds that do not."""
    return len(np.unique(hidden_products)) >= MIN_HIDDEN_PRODUCTS


def _refused_out_of_fold(answers: FoldAnswers, refuse_unseen: float, use: tuple[str, ...]) -> np.ndarray | None:
    """Which frames a score fitted on the other folds refuses, fold by fold, at the threshold that refuses
    `refuse_unseen` of the fold's own never-seen frames (threshold_for alone: the gap above the known frames that the
    shipped threshold is lowered into, with_operating_point, would refuse no more of them); None where some fold's
    others lack never-seen or known frames."""
    refused = np.zeros(len(answers.unseen), dtype=bool)
    for fold in np.unique(answers.fold).tolist():
        scored = answers.fold == fold
        fitted = ~scored
        if answers.unseen[fitted].all() or not answers.unseen[fitted].any() or not answers.unseen[scored].any():
            return None
        score = fit_novelty(
            answers.inputs[fitted],
            answers.unseen[fitted],
            refuse_unseen,
            answered_right=answers.correct[fitted],
            use=use,
        ).score(answers.inputs[scored])
        refused[scored] = score >= threshold_for(score[answers.unseen[scored]], refuse_unseen)
    return refused


def calibrate_open_set(answers: FoldAnswers, *, refuse_unseen: float, target_precision: float) -> OpenSetCalibration:
    """Fit the novelty score on the folds' answers, its threshold, and the category threshold of refused frames."""
    novelty, verdict = chosen_score(answers, refuse_unseen)
    scores = novelty.score(answers.inputs)
    objects = calibrate_objects(scores, answers.unseen, answers.products, answers.predicted, novelty.threshold)
    novelty = replace(novelty, object_thresholds=objects.more_thresholds)
    refused = scores >= novelty.threshold
    category_threshold = (
        calibrate_threshold(answers.category_conf[refused], answers.category_hit[refused], target_precision)
        if refused.any()
        else 0.5
    )
    curve = open_set_curve(scores, answers.unseen, answers.correct, novelty.threshold)
    known = ~answers.unseen
    report: dict[str, Any] = {
        "open_set": curve,
        "open_set_by_product": open_set_by_product(
            scores, answers.products, answers.unseen, answers.correct, novelty.threshold
        ),
        "open_set_confused": confused_pairs(answers.products[known], answers.predicted[known]),
        "novelty": {**novelty.record(), "category_threshold": round(category_threshold, 6)},
        "objects": objects.report,
        **({"product_distance": verdict} if verdict is not None else {}),
    }
    logger.info(
        "novelty threshold %.3f: never-seen refused %.1f%%, known answered right %.1f%% (AUROC %s)",
        novelty.threshold,
        100 * curve["unseen_refused"],
        100 * curve["known_answered_right"],
        curve["auroc"],
    )
    return OpenSetCalibration(novelty, category_threshold, report, scores, answers.unseen)
