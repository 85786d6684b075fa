"""Fitting a head on finished features: the structure, each node's classifier chosen by cross-validation, the
novelty score and the thresholds (`fit_model`). Training runs it on the photos' features; a consolidation
(models.train.consolidation) runs it again on a version's stored rows, without a photo or the backbone."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np
from sklearn.metrics import f1_score

from models.answer.classifiers import KINDS, PREPROCESSING, Candidate, candidates
from models.answer.gallery import DEFAULT_MAX_PER_PRODUCT
from models.answer.head import CATEGORY_FIRST, FLAT, ProductHead, compose
from models.answer.novelty import NoveltyModel
from models.train.node_fitting import (
    DEFAULT_CANDIDATE,
    Node,
    Tuned,
    calibrate_threshold,
    canonical_sample,
    fit_nodes,
    fold_count,
    head_nodes,
    node_starts,
    photo_folds,
    resolve_structure,
    tune_node,
)
from models.train.open_set import HiddenFold, OpenSetCalibration, calibrate_open_set, fold_answers
from models.train.report import confused_pairs, confused_with, evaluation

logger = logging.getLogger(__name__)


def progress(label: str, total: int) -> Callable[[int], None]:
    """A one-line progress bar on stderr (plain log lines when stderr is not a terminal)."""
    started = time.monotonic()
    tty = sys.stderr.isatty()

    def update(done: int) -> None:
        if not tty and done not in (total,) and done % max(1, total // 10):
            return
        rate = done / max(time.monotonic() - started, 1e-9)
        bar = "#" * int(30 * done / max(total, 1))
        line = f"{label}: [{bar:<30}] {done}/{total} ({rate:.1f}/s)"
        if tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return update


def progress_ticker(label: str, total: int, show: bool) -> Callable[[], None]:
    """A callable to call once per step done; it draws a progress bar when `show`."""
    update = progress(label, total) if show else None
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if update is not None:
            update(done)

    return tick


def choose_classifiers(
    nodes: Sequence[Node],
    features: np.ndarray,
    real: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    search: Sequence[Candidate],
    *,
    seed: int,
    show_progress: bool,
) -> dict[str | None, Tuned]:
    """Every node's candidate with the best cross-validated macro-F1, with its out-of-fold answers."""
    tick = progress_ticker("choosing classifiers", len(nodes) * len(search) * len(splits), show_progress)
    return {node.scope: tune_node(node, features, real, splits, search, seed=seed, tick=tick) for node in nodes}


def classifiers_report(tuned: Mapping[str | None, Tuned], structure: str) -> dict[str, dict[str, Any]]:
    """The report's record of each level's choice: chosen, its macro-F1, and every candidate's."""
    return {
        ("(categories)" if scope is None and structure == CATEGORY_FIRST else scope or "(products)"): {
            "chosen": result.candidate.label,
            "cv_macro_f1": result.scores[result.candidate.label],
            "candidates": result.scores,
        }
        for scope, result in tuned.items()
    }


@dataclass(frozen=True, slots=True)
class OutOfFold:
    """The head's out-of-fold answers on the real photos, its levels composed as the fitted head composes them."""

    labels: np.ndarray  # true product of each real photo
    classes: np.ndarray  # products, sorted: the columns of the composed probabilities
    predicted: np.ndarray  # product answered
    product_conf: np.ndarray
    product_hit: np.ndarray
    category_conf: np.ndarray
    category_hit: np.ndarray


def out_of_fold(
    tuned: Mapping[str | None, Tuned], labels: np.ndarray, categories_of: Mapping[str, str], structure: str
) -> OutOfFold:
    """Compose the levels' out-of-fold probabilities into product and category answers, and score them."""
    classes = np.unique(labels)
    levels = {scope: (list(result.classes), result.oof) for scope, result in tuned.items()}
    oof = compose(list(classes), categories_of, structure, levels)  # as the head will compose them
    predicted = classes[oof.argmax(axis=1)]
    category_names = sorted({categories_of[c] for c in classes})
    member = np.array([[categories_of[c] == name for name in category_names] for c in classes], dtype=float)
    category_probs = oof @ member
    true_category = np.array([categories_of[label] for label in labels])
    return OutOfFold(
        labels=labels,
        classes=classes,
        predicted=predicted,
        product_conf=oof.max(axis=1),
        product_hit=predicted == labels,
        category_conf=category_probs.max(axis=1),
        category_hit=np.asarray(category_names)[category_probs.argmax(axis=1)] == true_category,
    )


@dataclass(frozen=True, slots=True)
class CrossValidation:
    tuned: dict[str | None, Tuned]
    oof: OutOfFold


def cross_validate(
    features: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    categories_of: Mapping[str, str],
    structure: str,
    search: Sequence[Candidate],
    seed: int,
    show_progress: bool,
) -> CrossValidation | None:
    """Choose every level's classifier on folds of the real photos; None with too few photos per product."""
    real = np.flatnonzero(~synthetic)
    folds = fold_count(labels[real])
    if folds < 2:
        return None
    splits = photo_folds(real, labels[real], groups, folds, seed)
    nodes = head_nodes(labels, categories, structure)
    tuned = choose_classifiers(nodes, features, real, splits, search, seed=seed, show_progress=show_progress)
    return CrossValidation(tuned, out_of_fold(tuned, labels[real], categories_of, structure))


def unknown_thresholds(
    oof: OutOfFold | None, target_precision: float, product: float | None, category: float | None
) -> tuple[float, float]:
    """(product, category) thresholds: those given, else calibrated on the out-of-fold answers, else 0.5."""
    if product is None:
        product = calibrate_threshold(oof.product_conf, oof.product_hit, target_precision) if oof else 0.5
    if category is None:
        category = calibrate_threshold(oof.category_conf, oof.category_hit, target_precision) if oof else 0.5
    return product, category


def cv_report(oof: OutOfFold, product_threshold: float) -> dict[str, Any]:
    """The cross-validated figures: the evaluation tables, and what the product threshold accepts."""
    accepted = oof.product_conf >= product_threshold
    evaluated = evaluation(oof.labels, oof.predicted, oof.product_conf, oof.classes)
    return {
        "cv_evaluation": evaluated,
        "cv_accuracy": evaluated["accuracy"],
        "cv_category_accuracy": round(float(oof.category_hit.mean()), 4),
        "cv_coverage": round(float(accepted.mean()), 4),
        "cv_precision_when_recognized": round(float(oof.product_hit[accepted].mean()), 4) if accepted.any() else None,
    }


AUTO = "auto"  # structure: cross-validation chooses between flat and category-first
FLAT_UP_TO_PRODUCTS = 2000  # past it, auto is category-first: a flat logistic node over 10,000 products on 50,000
# rows holds a 50,000 x 10,000 float64 probability matrix (4 GB) and each of its iterations costs ~1 TFLOP


FLAT_TIES_UP_TO = 100  # products: past it a flat head must answer significantly more photos right (structure_preferred)
SIGNIFICANT_SE = 2.0  # standard errors of the paired difference that make it significant


class StructureChoice(NamedTuple):
    """The structure choose_structure chose, the scores it compared, and why (the report's `structure_why`)."""

    structure: str
    scores: dict[str, float]  # each structure's cross-validated macro-F1 (none when there was nothing to choose)
    why: str = ""


def choose_structure(
    features: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    categories_of: Mapping[str, str],
    seed: int,
    products: int | None = None,
) -> StructureChoice:
    """Flat or category-first, by their cross-validated answers with the default classifier at every node (the
    full search then runs once, on the structure chosen): structure_preferred. `products`: how many the head will
    hold (default: those in `labels`; a tuning sample of whole categories may hold fewer)."""
    if len(np.unique(categories)) < 2:
        return StructureChoice(FLAT, {}, "one category")
    scores: dict[str, float] = {}
    right: dict[str, np.ndarray] = {}
    for structure in (FLAT, CATEGORY_FIRST):
        cv = cross_validate(
            features,
            labels,
            categories,
            groups,
            synthetic,
            categories_of=categories_of,
            structure=structure,
            search=[DEFAULT_CANDIDATE],
            seed=seed,
            show_progress=False,
        )
        if cv is None:
            return StructureChoice(FLAT, {}, "too few photos to cross-validate")
        scores[structure] = round(float(f1_score(cv.oof.labels, cv.oof.predicted, average="macro")), 4)
        right[structure] = cv.oof.predicted == cv.oof.labels
    products = len(np.unique(labels)) if products is None else products
    structure, why = structure_preferred(scores, right[FLAT], right[CATEGORY_FIRST], products)
    return StructureChoice(structure, scores, why)


def structure_preferred(
    scores: Mapping[str, float], flat_right: np.ndarray, first_right: np.ndarray, products: int
) -> tuple[str, str]:
    """The structure with the better macro-F1, and why. Up to FLAT_TIES_UP_TO products flat wins ties: it is
    simpler. Past it, flat is chosen only when it also answers significantly more of the same photos right
    (`flat_right`, `first_right`: each structure's out-of-fold hits on the same photos): the photos only it answers
    right outnumber those only category-first does by SIGNIFICANT_SE standard errors of that difference (a paired,
    McNemar-style test). Otherwise category-first: its fits grow far slower with the catalog (a round of a
    consolidation that searched took 172-287 s over one flat node of 350-400 look-alike parts, 74-185 s
    category-first), and a flat head ahead by the folds' noise is not worth that."""
    flat, first = scores[FLAT], scores[CATEGORY_FIRST]
    if first > flat:
        return CATEGORY_FIRST, f"the better cross-validated macro-F1 ({first:.4f} against flat's {flat:.4f})"
    if products <= FLAT_TIES_UP_TO:
        return FLAT, f"macro-F1 {flat:.4f} against category-first's {first:.4f} (flat wins ties: it is simpler)"
    only_flat = int(np.sum(flat_right & ~first_right))
    only_first = int(np.sum(first_right & ~flat_right))
    margin = SIGNIFICANT_SE * float(np.sqrt(only_flat + only_first))
    counts = f"photos only flat answered right {only_flat}, only category-first {only_first}"
    if flat > first and only_flat - only_first > margin:
        return FLAT, f"macro-F1 {flat:.4f} against {first:.4f}, significantly ahead ({counts})"
    return CATEGORY_FIRST, (
        f"flat's macro-F1 {flat:.4f} against {first:.4f} is within the folds' noise at {products} products "
        f"({counts}): category-first, whose fits grow slower with the catalog"
    )


@dataclass(frozen=True)
class FittedHead:
    head: ProductHead
    report: dict[str, Any]
    novelty: NoveltyModel | None
    calibration: OpenSetCalibration | None = None
    chosen: Mapping[str | None, tuple[Candidate, float]] | None = None  # each node's classifier and temperature


def fit_model(  # long: 17 documented settings; the body is one call per step
    features: np.ndarray,
    products: list[str],
    categories_of: dict[str, str],
    *,
    target_precision: float = 0.9,
    product_threshold: float | None = None,
    category_threshold: float | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
    synthetic: np.ndarray | None = None,
    structure: str = AUTO,
    search: Sequence[Candidate] | None = None,
    show_progress: bool = False,
    tuning_photos: int | None = None,
    refuse_unseen: float | None = None,
    gallery_per_product: int = DEFAULT_MAX_PER_PRODUCT,
    start: ProductHead | None = None,
    hidden_folds: Sequence[HiddenFold] = (),
    photo_keys: np.ndarray | None = None,
) -> FittedHead:
    """Choose and fit the head's classifiers by stratified CV on macro-F1; calibrate "unknown".

    `structure` category-first fits a category classifier and one product classifier per category (each
    chosen separately from `search`); flat fits one classifier over all products; auto lets cross-validation
    choose. With synthetic copies (`synthetic` True, `groups` naming each row's photo), folds split photos,
    never a photo from its copies: a fold trains on its photos and their copies and is scored on real photos
    only. With more than `tuning_photos` photos, the choice and the calibration come from a sample (tuning_sample)
    of that many photos (with their copies); the chosen classifiers are then fitted on everything.

    "Unknown": with `refuse_unseen` (and three or more products), a novelty score is fitted on
    leave-products-out folds (models.train.open_set) to refuse that share of never-seen products, and the product
    threshold is 0 unless given (the novelty score decides); otherwise the thresholds are calibrated on the
    out-of-fold answers to `target_precision`, as before galleries.

    `start`: a head fitted before on most of these rows (a consolidation's version): when it has the structure
    fitted, each final fit starts from its node's classifier (fit_nodes).

    `hidden_folds`: the leave-products-out folds of the novelty score are these (a tuned backbone's folds, each
    with its own features of every row, from a network that never learned the products it hides).

    `photo_keys`: each row's photo's sha256. The choices and the calibration are made on the rows in an order that
    does not depend on the order they are given in (canonical_order: by product, then by photo key; by product alone
    without keys), so the same photos make the same folds in a training and in a consolidation of its rows.
    """
    search = list(search) if search is not None else candidates()
    all_labels = np.asarray(products)
    head_products = np.unique(all_labels)  # the head's products, in its order
    synthetic = np.zeros(len(all_labels), dtype=bool) if synthetic is None else np.asarray(synthetic, dtype=bool)
    groups = np.arange(len(all_labels)) if groups is None else np.asarray(groups)
    categories = np.array([categories_of[p] for p in all_labels])
    report, sample, rows = _tuning_rows(
        features, all_labels, categories, groups, synthetic, tuning_photos, seed, photo_keys
    )
    report["target_precision"] = target_precision
    if structure == AUTO and len(head_products) > FLAT_UP_TO_PRODUCTS and len(np.unique(categories)) > 1:
        structure = CATEGORY_FIRST  # one classifier over them all would not fit in memory (FLAT_UP_TO_PRODUCTS)
        report["structure_why"] = f"more than {FLAT_UP_TO_PRODUCTS} products: category-first without trying flat"
    if structure == AUTO:
        structure, structure_scores, why = choose_structure(
            *sample, categories_of=categories_of, seed=seed, products=len(head_products)
        )
        if structure_scores:
            report["structure_cv_macro_f1"] = structure_scores
        if why:
            report["structure_why"] = why
    structure = resolve_structure(structure, categories)
    report["structure"] = structure
    nodes = head_nodes(all_labels, categories, structure)
    cv = cross_validate(
        *sample, categories_of=categories_of, structure=structure, search=search, seed=seed, show_progress=show_progress
    )
    chosen = _chosen_classifiers(nodes, cv, structure, report)
    oof = cv.oof if cv is not None else None
    calibration = _calibrate_novelty(
        sample,
        categories_of=categories_of,
        structure=structure,
        chosen=chosen,
        seed=seed,
        refuse_unseen=refuse_unseen,
        target_precision=target_precision,
        gallery_per_product=gallery_per_product,
        hidden_folds=[fold.sampled(rows) for fold in hidden_folds],
    )
    if calibration is not None:
        report.update(calibration.report)
    product_threshold, category_threshold = _shipped_thresholds(
        oof, calibration, target_precision, product_threshold, category_threshold, report
    )
    head = ProductHead(
        tuple(str(c) for c in head_products),
        tuple(categories_of[str(c)] for c in head_products),
        fit_nodes(
            nodes,
            chosen,
            features,
            seed,
            node_starts(start, structure),
        ),
        structure=structure,
        product_threshold=product_threshold,
        category_threshold=category_threshold,
    )
    novelty = calibration.novelty if calibration is not None else None
    return FittedHead(head, report, novelty, calibration, chosen)


class HeadSettings(Protocol):
    """What a head is fitted with: a training's options, or the choices a version keeps for later refits."""

    @property
    def target_precision(self) -> float: ...
    @property
    def product_threshold(self) -> float | None: ...
    @property
    def category_threshold(self) -> float | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def tuning_photos(self) -> int | None: ...
    @property
    def refuse_unseen(self) -> float | None: ...
    @property
    def gallery_per_product(self) -> int: ...


Search = tuple[tuple[str, ...], tuple[str, ...], str]  # classifier kinds, preprocessing, and why (search_for)


def fit_searched(  # noqa: PLR0917
    settings: HeadSettings,
    features: np.ndarray,
    products: Sequence[str],
    groups: np.ndarray,
    synthetic: np.ndarray,
    categories_of: dict[str, str],
    *,
    structure: str,
    search: Search,
    show_progress: bool = False,
    start: ProductHead | None = None,
    hidden_folds: Sequence[HiddenFold] = (),
    photo_keys: np.ndarray | None = None,
) -> FittedHead:
    """fit_model with `settings` over the `search` given; the report says what was searched and why."""
    kinds, steps, why = search
    logger.info("classifier search: %s (%s; %s)", why, ", ".join(kinds), ", ".join(steps))
    fitted = fit_model(
        features,
        list(products),
        categories_of,
        target_precision=settings.target_precision,
        product_threshold=settings.product_threshold,
        category_threshold=settings.category_threshold,
        seed=settings.seed,
        groups=groups,
        synthetic=synthetic,
        structure=structure,
        search=candidates(kinds, steps),
        show_progress=show_progress,
        tuning_photos=settings.tuning_photos,
        refuse_unseen=settings.refuse_unseen,
        gallery_per_product=settings.gallery_per_product,
        start=start,
        hidden_folds=hidden_folds,
        photo_keys=photo_keys,
    )
    fitted.report["classifier_search"] = {"kinds": list(kinds), "preprocessing": list(steps), "why": why}
    return fitted


def _tuning_rows(  # noqa: PLR0917
    features: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    tuning_photos: int | None,
    seed: int,
    photo_keys: np.ndarray | None,
) -> tuple[dict[str, Any], Sample, np.ndarray]:
    """The report's counts, and the rows to choose and calibrate on (and which they are: indices, in the order the
    sample holds them): whole products of whole categories, up to `tuning_photos` photos with their copies (all rows
    when there are fewer; models.train.node_fitting), drawn and held in canonical_order."""
    report: dict[str, Any] = {
        "images": int((~synthetic).sum()),
        "synthetic_images": int(synthetic.sum()),
        "products": len(np.unique(labels)),
    }
    rows = canonical_sample(labels, groups, synthetic, tuning_photos, seed, categories, photo_keys)
    if len(rows) < len(labels):
        report["tuned_on_images"] = int((~synthetic[rows]).sum())
        report["tuned_on_products"] = len(np.unique(labels[rows]))
        report["tuned_on_categories"] = len(np.unique(categories[rows]))
    sample = Sample(features[rows], labels[rows], categories[rows], groups[rows], synthetic[rows])
    return report, sample, rows


class Sample(NamedTuple):
    """The rows the choices and the calibration are made on (all of them, or the tuning sample)."""

    features: np.ndarray
    labels: np.ndarray
    categories: np.ndarray
    groups: np.ndarray
    synthetic: np.ndarray


def _chosen_classifiers(
    nodes: Sequence[Node], cv: CrossValidation | None, structure: str, report: dict[str, Any]
) -> dict[str | None, tuple[Candidate, float]]:
    """Each node's classifier and temperature: cross-validation's choice, or the default without folds.

    A category the tuning sample left out takes the choice most tuned categories made (with their median
    temperature); the report counts those nodes."""
    if cv is None:
        return {node.scope: (DEFAULT_CANDIDATE, 1.0) for node in nodes}
    report["classifiers"] = classifiers_report(cv.tuned, structure)
    logger.info(
        "classifiers chosen by cross-validated macro-F1: %s",
        {name: entry["chosen"] for name, entry in list(report["classifiers"].items())[:20]},
    )
    chosen = {scope: (result.candidate, result.temperature) for scope, result in cv.tuned.items()}
    untuned = [node.scope for node in nodes if node.scope not in chosen]
    if untuned:
        usual = most_chosen([pick for scope, pick in chosen.items() if scope is not None])
        chosen.update(dict.fromkeys(untuned, usual))
        report["untuned_nodes"] = {"nodes": len(untuned), "chosen": usual[0].label, "temperature": usual[1]}
    return chosen


def most_chosen(picks: Sequence[tuple[Candidate, float]]) -> tuple[Candidate, float]:
    """The candidate most nodes chose (the first among equals), with their median temperature; the default
    with none."""
    if not picks:
        return DEFAULT_CANDIDATE, 1.0
    labels = [candidate.label for candidate, _ in picks]
    label = max(dict.fromkeys(labels), key=labels.count)
    temperatures = [temperature for candidate, temperature in picks if candidate.label == label]
    candidate = next(candidate for candidate, _ in picks if candidate.label == label)
    return candidate, float(np.median(temperatures))


def _calibrate_novelty(
    sample: Sample,
    *,
    categories_of: Mapping[str, str],
    structure: str,
    chosen: Mapping[str | None, tuple[Candidate, float]],
    seed: int,
    refuse_unseen: float | None,
    target_precision: float,
    gallery_per_product: int,
    hidden_folds: Sequence[HiddenFold],
) -> OpenSetCalibration | None:
    """The novelty score fitted on leave-products-out folds (`hidden_folds` where given: fold_answers); None
    without `refuse_unseen`, or with too few products or photos to hide some."""
    if refuse_unseen is None:
        return None
    answers_on = partial(
        fold_answers,
        sample.features,
        sample.labels,
        sample.groups,
        sample.synthetic,
        categories_of=categories_of,
        structure=structure,
        chosen=chosen,
        seed=seed,
        max_per_product=gallery_per_product,
    )
    answers = answers_on(hidden_folds=hidden_folds) if hidden_folds else None
    networks = f"{ON_TUNING_FOLDS} ({len(hidden_folds)}), each hiding products it never learned"
    if answers is None:  # every product hidden once, on the shipped features
        if hidden_folds:
            logger.warning(
                "the tuning's folds cannot hide products here: the novelty score is fitted on the shipped features"
            )
        answers, networks = answers_on(), "the shipped one's"
    if answers is None:
        logger.warning("too few products or photos to hide products: no novelty score, thresholds as before")
        return None
    calibration = calibrate_open_set(answers, refuse_unseen=refuse_unseen, target_precision=target_precision)
    calibration.report["open_set"]["networks"] = networks
    return calibration


def _shipped_thresholds(  # noqa: PLR0917
    oof: OutOfFold | None,
    calibration: OpenSetCalibration | None,
    target_precision: float,
    product_threshold: float | None,
    category_threshold: float | None,
    report: dict[str, Any],
) -> tuple[float, float]:
    """The thresholds given, else those of the novelty calibration (product 0: the novelty score decides), else
    calibrated on the out-of-fold answers; recorded in the report with the cross-validated figures."""
    if calibration is not None:
        product_threshold = 0.0 if product_threshold is None else product_threshold
        if category_threshold is None:
            category_threshold = calibration.category_threshold
    product, category = unknown_thresholds(oof, target_precision, product_threshold, category_threshold)
    if oof is not None:
        report.update(cv_report(oof, product))
        report["confused_pairs"] = confused_pairs(oof.labels, oof.predicted)
        report["look_alikes"] = confused_with(oof.labels, oof.predicted)
    report.update(product_threshold=round(product, 6), category_threshold=round(category, 6))
    logger.info(
        "unknown thresholds: product %.3f, category %.3f (%s)",
        product,
        category,
        {k: report.get(k) for k in ("cv_accuracy", "cv_coverage", "cv_precision_when_recognized")},
    )
    return product, category


ON_TUNING_FOLDS = "the tuning's folds'"  # the report's open_set.networks, where the novelty score was fitted on them


def on_tuning_folds(report: Mapping[str, Any]) -> bool:
    """Whether the fitted head's novelty score was calibrated on a tuning's folds' networks (its report says)."""
    return str(report.get("open_set", {}).get("networks", "")).startswith(ON_TUNING_FOLDS)


SEARCH_EVERY_KIND_UP_TO = 40  # products; past it the default search is logistic regression alone
LARGE_CATALOG_SEARCH = (("logistic",), ("none",))


def search_for(
    products: int, classifiers: tuple[str, ...] | None, preprocessing: tuple[str, ...] | None
) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """The classifier kinds and preprocessing the search tries, and why. What is named is used as named; what is
    not is every kind (every preprocessing) up to SEARCH_EVERY_KIND_UP_TO products, and logistic regression alone
    (no preprocessing) past it: every candidate is fitted once per node and fold, and the SVMs, kNN and the MLP
    grow with the rows (the full search took about a minute at 10 parts of 20 photos and did not finish in 20
    minutes at 100 on a 2-core box)."""
    large = products > SEARCH_EVERY_KIND_UP_TO
    kinds = classifiers or (LARGE_CATALOG_SEARCH[0] if large else KINDS)
    steps = preprocessing or (LARGE_CATALOG_SEARCH[1] if large else PREPROCESSING)
    if classifiers and preprocessing:
        return kinds, steps, "as named"
    if not large:
        return kinds, steps, "every kind" if classifiers is None else "as named, every preprocessing"
    return kinds, steps, f"{products} products (> {SEARCH_EVERY_KIND_UP_TO}): logistic regression alone where not named"
