"""The trainer: `images/<category>/<product>/*` plus a catalog -> a verified, versioned model directory.

Features come from the frozen backbone (with optional synthetic copies of each photo, cached on disk). The
head is category-first (a category classifier, then one product classifier per category) or flat; each of
its classifiers is chosen among logistic regression, linear and RBF SVMs, kNN and an MLP, with optional
standardisation and PCA, by stratified cross-validation on macro-F1 that never splits a photo from its
copies. The "unknown" thresholds are calibrated on the out-of-fold answers to a target precision.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.metrics import f1_score

from models.answer.classifiers import (
    KINDS,
    PREPROCESSING,
    Candidate,
    candidates,
)
from models.answer.gallery import DEFAULT_MAX_PER_PRODUCT, build_gallery
from models.answer.head import CATEGORY_FIRST, FLAT, ProductHead, compose
from models.answer.novelty import DEFAULT_REFUSE_UNSEEN, NoveltyModel
from models.answer.row_shards import write_rows
from models.bundle import new_version, write_model
from models.errors import DatasetError, ImageError
from models.extract.backbones import DEFAULT_BACKBONE, BackboneSpec, get_backbone, load_network
from models.extract.decode import decode_image, decode_photo, resize_center_crop
from models.extract.feature_cache import FeatureCache
from models.extract.features import FeatureExtractor
from models.extract.onnx_export import ONNX_FILE, OPSET, export_backbone
from models.extract.recipe import (
    CANDIDATES,
    DEFAULT,
    SUPERSET_VERSION,
    FeatureRecipe,
    combine_parts,
    finish,
    fit_center,
)
from models.store.catalog import Catalog, load_catalog
from models.store.versions import file_sha256
from models.train.augment import ALL_TRANSFORMS, Augmenter, BackgroundReplacer, backgrounds_from_folder
from models.train.enrolment_base import (
    BASE_PREFIX,
    DEFAULT_BASE_PER_PRODUCT,
    Choices,
    EnrolmentBase,
    base_record,
    stored_base,
)
from models.train.node_fitting import (
    DEFAULT_CANDIDATE,
    Node,
    Tuned,
    calibrate_threshold,
    fit_nodes,
    fold_count,
    head_nodes,
    photo_folds,
    resolve_structure,
    tune_node,
    tuning_sample,
)
from models.train.open_set import OpenSetCalibration, calibrate_open_set, fold_answers
from models.train.report import confused_pairs, evaluation, write_report

logger = logging.getLogger(__name__)

ONNX_CHECK_PHOTOS = 8  # training photos the exported graph must match torch on
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    category: str
    product: str


def scan_images(root: Path, catalog: Catalog) -> list[LabelledImage]:
    """List `root/<category>/<product>/*` and check it against the catalog; DatasetError for any mismatch."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    found: list[LabelledImage] = []
    problems: list[str] = []
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for product_dir in sorted(p for p in category_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            product = product_dir.name
            images = sorted(p for p in product_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if product not in catalog:
                problems.append(f"{product_dir}: product {product!r} is not in the catalog")
                continue
            if catalog[product]["category"] != category_dir.name:
                problems.append(
                    f"{product_dir}: the catalog puts {product!r} in category "
                    f"{catalog[product]['category']!r}, not {category_dir.name!r}"
                )
                continue
            if not images:
                problems.append(f"{product_dir}: product {product!r} has no .jpg/.png/.webp images")
                continue
            found.extend(LabelledImage(path, category_dir.name, product) for path in images)
    if problems:
        raise DatasetError("the image folder does not fit the catalog:\n  " + "\n  ".join(problems))
    if len({item.product for item in found}) < 2:
        raise DatasetError(f"{root}: at least two products with images are needed to train")
    return found


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


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Features of the photos and their synthetic copies; `groups` ties each copy to its photo."""

    features: np.ndarray
    products: list[str]
    groups: np.ndarray  # photo index of every row
    synthetic: np.ndarray  # True for a synthetic copy


def photo_seed(data: bytes) -> int:
    """A seed from the photo's bytes: its synthetic copies stay the same whatever else is in the folder."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def model_inputs(item: LabelledImage, data: bytes, size: int, augmenter: Augmenter | None) -> list[np.ndarray]:
    """The photo as a model input, then its synthetic copies; DatasetError names a photo that cannot be used."""
    try:
        original = decode_image(data, size=size)  # exactly what a worker makes of the photo
        if augmenter is None or augmenter.copies == 0:
            return [original]
        photo = decode_photo(data, size_hint=2 * size)
    except ImageError as exc:
        raise DatasetError(f"{item.path}: cannot be used for training: {exc}") from exc
    copies = augmenter.variants(photo, photo_seed(data))
    return [original, *[np.asarray(resize_center_crop(image, size)) for image in copies]]


def extract_features(
    images: list[LabelledImage],
    extractor: FeatureExtractor,
    *,
    batch_size: int = 32,
    show_progress: bool = True,
    augmenter: Augmenter | None = None,
    cache: FeatureCache | None = None,
) -> TrainingSet:
    """Features of every photo and its synthetic copies, in batches; cached ones are read, not computed."""
    size = extractor.spec.input_size
    update = progress("features", len(images)) if show_progress else (lambda done: None)
    if augmenter is not None and not (augmenter.copies and augmenter.names):
        augmenter = None  # nothing to make: the photos alone
    variants = ["original"] + ([augmenter.recipe(k) for k in range(augmenter.copies)] if augmenter else [])
    rows: list[np.ndarray | None] = []
    keys: list[str | None] = []
    products: list[str] = []
    groups: list[int] = []
    waiting: list[tuple[int, np.ndarray]] = []

    def run_waiting() -> None:
        computed = extractor(np.stack([array for _, array in waiting]))
        for (row, _), vector in zip(waiting, computed, strict=True):
            rows[row] = vector
            key = keys[row]
            if cache is not None and key is not None:
                cache.put(key, vector)
        waiting.clear()

    for index, item in enumerate(images):
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{item.path}: cannot be used for training: {exc}") from exc
        photo_keys = [cache.key(data, variant) for variant in variants] if cache is not None else [None] * len(variants)
        cached = [cache.get(key) if cache is not None and key else None for key in photo_keys]
        inputs = model_inputs(item, data, size, augmenter) if any(v is None for v in cached) else []
        for position, (key, vector) in enumerate(zip(photo_keys, cached, strict=True)):
            if vector is None:
                waiting.append((len(rows), inputs[position]))
            rows.append(vector)
            keys.append(key)
            products.append(item.product)
            groups.append(index)
        if len(waiting) >= batch_size:
            run_waiting()
        update(index + 1)
    if waiting:
        run_waiting()
    synthetic = np.tile(np.arange(len(variants)) > 0, len(images))
    return TrainingSet(np.stack(rows), products, np.asarray(groups), synthetic)  # type: ignore[arg-type]


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


def choose_recipe(
    superset: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    recipes: Sequence[FeatureRecipe],
    seed: int,
    tuning_photos: int | None,
) -> tuple[FeatureRecipe, dict[str, float]]:
    """The recipe with the best cross-validated macro-F1 of one flat default classifier, on the same photo folds
    (and tuning sample) as the classifier search; an earlier, cheaper recipe wins ties. With too few photos to
    cross-validate, models.extract.recipe.DEFAULT when it is among `recipes`, else the first."""
    fallback = DEFAULT if DEFAULT in recipes else recipes[0]
    if len(recipes) == 1:
        return recipes[0], {}
    tuning = tuning_sample(labels, groups, synthetic, tuning_photos, seed)
    rows, y, g, fake = superset[tuning], labels[tuning], groups[tuning], synthetic[tuning]
    real = np.flatnonzero(~fake)
    folds = fold_count(y[real])
    if folds < 2:
        return fallback, {}
    splits = photo_folds(real, y[real], g, folds, seed)
    node = Node(None, np.ones(len(y), dtype=bool), y)
    scores: dict[str, float] = {}
    best, best_score = recipes[0], -1.0
    for recipe in recipes:
        combined = combine_parts(rows, recipe)
        x = finish(combined, fit_center(combined[real], recipe))
        tuned = tune_node(node, x, real, splits, [DEFAULT_CANDIDATE], seed=seed, tick=lambda: None)
        score = float(f1_score(y[real], tuned.classes[tuned.oof.argmax(axis=1)], average="macro"))
        scores[recipe.label] = round(score, 4)
        if score > best_score + 1e-9:
            best, best_score = recipe, score
    logger.info("feature recipe chosen by cross-validated macro-F1: %s (%s)", best.label, scores)
    return best, scores


def choose_structure(
    features: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    categories_of: Mapping[str, str],
    seed: int,
) -> tuple[str, dict[str, float]]:
    """Flat or category-first, whichever has the better cross-validated macro-F1 with the default classifier
    at every node (the full search then runs once, on the structure chosen). Flat wins ties: it is simpler."""
    if len(np.unique(categories)) < 2:
        return FLAT, {}
    scores: dict[str, float] = {}
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
            return FLAT, {}
        scores[structure] = round(float(f1_score(cv.oof.labels, cv.oof.predicted, average="macro")), 4)
    return (CATEGORY_FIRST if scores[CATEGORY_FIRST] > scores[FLAT] else FLAT), scores


@dataclass(frozen=True)
class FittedHead:
    head: ProductHead
    report: dict[str, Any]
    novelty: NoveltyModel | None
    calibration: OpenSetCalibration | None = None
    chosen: Mapping[str | None, tuple[Candidate, float]] | None = None  # each node's classifier and temperature


def fit_model(  # long: 16 documented settings; the body is one call per step
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
) -> FittedHead:
    """Choose and fit the head's classifiers by stratified CV on macro-F1; calibrate "unknown".

    `structure` category-first fits a category classifier and one product classifier per category (each
    chosen separately from `search`); flat fits one classifier over all products; auto lets cross-validation
    choose. With synthetic copies (`synthetic` True, `groups` naming each row's photo), folds split photos,
    never a photo from its copies: a fold trains on its photos and their copies and is scored on real photos
    only. With more than `tuning_photos` photos, the choice and the calibration come from a stratified sample
    of that many photos (with their copies); the chosen classifiers are then fitted on everything.

    "Unknown": with `refuse_unseen` (and three or more products), a novelty score is fitted on
    leave-products-out folds (models.train.open_set) to refuse that share of never-seen products, and the product
    threshold is 0 unless given (the novelty score decides); otherwise the thresholds are calibrated on the
    out-of-fold answers to `target_precision`, as before galleries.
    """
    search = list(search) if search is not None else candidates()
    all_labels = np.asarray(products)
    synthetic = np.zeros(len(all_labels), dtype=bool) if synthetic is None else np.asarray(synthetic, dtype=bool)
    groups = np.arange(len(all_labels)) if groups is None else np.asarray(groups)
    categories = np.array([categories_of[p] for p in all_labels])
    report, sample = _tuning_rows(features, all_labels, categories, groups, synthetic, tuning_photos, seed)
    report["target_precision"] = target_precision
    if structure == AUTO:
        structure, structure_scores = choose_structure(*sample, categories_of=categories_of, seed=seed)
        if structure_scores:
            report["structure_cv_macro_f1"] = structure_scores
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
    )
    if calibration is not None:
        report.update(calibration.report)
    product_threshold, category_threshold = _shipped_thresholds(
        oof, calibration, target_precision, product_threshold, category_threshold, report
    )
    head = ProductHead(
        tuple(str(c) for c in np.unique(all_labels)),
        tuple(categories_of[str(c)] for c in np.unique(all_labels)),
        fit_nodes(nodes, chosen, features, seed),
        structure=structure,
        product_threshold=product_threshold,
        category_threshold=category_threshold,
    )
    novelty = calibration.novelty if calibration is not None else None
    return FittedHead(head, report, novelty, calibration, chosen)


def _tuning_rows(  # noqa: PLR0917
    features: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    tuning_photos: int | None,
    seed: int,
) -> tuple[dict[str, Any], Sample]:
    """The report's counts, and the rows to choose and calibrate on: a stratified sample of `tuning_photos`
    photos with their copies (all rows when there are fewer)."""
    report: dict[str, Any] = {
        "images": int((~synthetic).sum()),
        "synthetic_images": int(synthetic.sum()),
        "products": len(np.unique(labels)),
    }
    tuning = tuning_sample(labels, groups, synthetic, tuning_photos, seed)
    if not tuning.all():
        report["tuned_on_images"] = int((tuning & ~synthetic).sum())
    return report, Sample(features[tuning], labels[tuning], categories[tuning], groups[tuning], synthetic[tuning])


class Sample(NamedTuple):
    """The rows the choices and the calibration are made on (all of them, or a stratified tuning sample)."""

    features: np.ndarray
    labels: np.ndarray
    categories: np.ndarray
    groups: np.ndarray
    synthetic: np.ndarray


def _chosen_classifiers(
    nodes: Sequence[Node], cv: CrossValidation | None, structure: str, report: dict[str, Any]
) -> dict[str | None, tuple[Candidate, float]]:
    """Each node's classifier and temperature: cross-validation's choice, or the default without folds."""
    if cv is None:
        return {node.scope: (DEFAULT_CANDIDATE, 1.0) for node in nodes}
    report["classifiers"] = classifiers_report(cv.tuned, structure)
    logger.info(
        "classifiers chosen by cross-validated macro-F1: %s",
        {name: entry["chosen"] for name, entry in report["classifiers"].items()},
    )
    return {scope: (result.candidate, result.temperature) for scope, result in cv.tuned.items()}


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
) -> OpenSetCalibration | None:
    """The novelty score fitted on leave-products-out folds; None without `refuse_unseen`, or with too few
    products or photos to hide some."""
    if refuse_unseen is None:
        return None
    answers = fold_answers(
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
    if answers is None:
        logger.warning("too few products or photos to hide products: no novelty score, thresholds as before")
        return None
    return calibrate_open_set(answers, refuse_unseen=refuse_unseen, target_precision=target_precision)


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
    report.update(product_threshold=round(product, 6), category_threshold=round(category, 6))
    logger.info(
        "unknown thresholds: product %.3f, category %.3f (%s)",
        product,
        category,
        {k: report.get(k) for k in ("cv_accuracy", "cv_coverage", "cv_precision_when_recognized")},
    )
    return product, category


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainOptions:
    images: Path
    catalog: Path
    out: Path
    name: str = "partsight"
    backbone: str = DEFAULT_BACKBONE
    weights: Path | None = None
    device: str = "auto"
    batch_size: int = 32
    target_precision: float = 0.9
    product_threshold: float | None = None
    category_threshold: float | None = None
    show_progress: bool = True
    export_onnx: bool = True
    cache: Path | None = None  # default: <out>/.feature-cache
    use_cache: bool = True
    synthetic_per_image: int = 0
    transforms: tuple[str, ...] = ALL_TRANSFORMS
    backgrounds: Path | None = None
    seed: int = 0
    structure: str = AUTO
    recipes: tuple[FeatureRecipe, ...] = CANDIDATES  # cross-validation chooses among them
    refuse_unseen: float | None = DEFAULT_REFUSE_UNSEEN  # None: thresholds from known products only
    gallery_per_product: int = DEFAULT_MAX_PER_PRODUCT
    base_per_product: int = DEFAULT_BASE_PER_PRODUCT  # photos of a product whose features enrolments refit on
    classifiers: tuple[str, ...] = KINDS
    preprocessing: tuple[str, ...] = PREPROCESSING
    tuning_photos: int | None = 3000  # cross-validate on a stratified sample of this many photos (None: all)


def photo_ids(images: Sequence[LabelledImage], root: Path) -> tuple[list[str], list[str]]:
    """Each photo's stable id: its path under the image folder, and the sha256 of its bytes."""
    paths = [item.path.relative_to(root).as_posix() for item in images]
    return paths, [file_sha256(item.path) for item in images]


def train(options: TrainOptions) -> Path:  # long: one call per step, most with a line per argument
    """Train and write a new model version; returns its directory."""
    catalog = load_catalog(options.catalog)
    images = scan_images(options.images, catalog)
    spec = get_backbone(options.backbone)
    extractor = FeatureExtractor(spec, weights=options.weights, device=options.device, cpu_threads=None, superset=True)
    logger.info("training on %d images of %d products", len(images), len({i.product for i in images}))
    augmenter = _augmenter(options)
    weights_sha256 = file_sha256(extractor.weights_path)
    namespace = f"{spec.name}:{weights_sha256}:{spec.input_size}:superset-{SUPERSET_VERSION}"
    cache = FeatureCache(options.cache or options.out / ".feature-cache", namespace) if options.use_cache else None
    data = extract_features(
        images,
        extractor,
        batch_size=options.batch_size,
        show_progress=options.show_progress,
        augmenter=augmenter,
        cache=cache,
    )
    labels = np.asarray(data.products)
    recipe, recipe_scores, center, features = _recipe_and_features(options, data)
    fitted = _fit_head(options, features, data, catalog)
    head, report = fitted.head, fitted.report
    version = new_version()
    paths, digests = photo_ids(images, options.images)
    base = EnrolmentBase(
        features, labels, data.groups, data.synthetic, np.asarray(paths)[data.groups], np.asarray(digests)[data.groups]
    ).capped(options.base_per_product, options.seed)
    report["features"] = {"recipe": recipe.record(), "label": recipe.label, "cv_macro_f1": recipe_scores}
    real = np.flatnonzero(~data.synthetic)  # rows of the photos themselves, in `images` order
    gallery = build_gallery(
        features[real],
        labels[real],
        paths,
        digests,
        head.products,
        max_per_product=options.gallery_per_product,
        seed=options.seed,
    )
    report["gallery"] = {"photos": len(gallery.features), "max_per_product": options.gallery_per_product}
    _report_inputs(report, cache, augmenter, options.seed)
    backbone = {
        "name": spec.name,
        "feature_dim": recipe.dim,
        "input_size": spec.input_size,
        "weights_sha256": weights_sha256,
    }
    check = np.stack(
        [decode_image(item.path.read_bytes(), size=spec.input_size) for item in images[:ONNX_CHECK_PHOTOS]]
    )
    return write_model(
        options.out,
        name=options.name,
        head=head,
        catalog={p: catalog[p] for p in head.products},
        backbone=backbone,
        extra={
            "training": _training_summary(report),
            "choices": _choices(options, fitted, version).record(),
        },
        version=version,
        write_files=_extras_writer(
            options, version, report, base, spec=spec, check=check, recipe=recipe, center=center
        ),
        recipe=recipe,
        center=center,
        gallery=gallery,
        novelty=fitted.novelty,
    )


def _recipe_and_features(
    options: TrainOptions, data: TrainingSet
) -> tuple[FeatureRecipe, dict[str, float], np.ndarray | None, np.ndarray]:
    """The feature recipe cross-validation chooses, its scores, its fitted mean and the finished features."""
    recipe, recipe_scores = choose_recipe(
        data.features,
        np.asarray(data.products),
        data.groups,
        data.synthetic,
        recipes=options.recipes,
        seed=options.seed,
        tuning_photos=options.tuning_photos,
    )
    combined = combine_parts(data.features, recipe)
    center = fit_center(combined[~data.synthetic], recipe)
    return recipe, recipe_scores, center, finish(combined, center)


def _augmenter(options: TrainOptions) -> Augmenter | None:
    """What makes each photo's synthetic copies; None when the options ask for none."""
    if not (options.synthetic_per_image and options.transforms):
        return None
    replacer = BackgroundReplacer(backgrounds_from_folder(options.backgrounds)) if options.backgrounds else None
    return Augmenter(
        names=options.transforms, copies=options.synthetic_per_image, seed=options.seed, background=replacer
    )


def _fit_head(options: TrainOptions, features: np.ndarray, data: TrainingSet, catalog: Catalog) -> FittedHead:
    """fit_model with the options' settings, on the finished features."""
    return fit_model(
        features,
        data.products,
        {product: str(record["category"]) for product, record in catalog.items()},
        target_precision=options.target_precision,
        product_threshold=options.product_threshold,
        category_threshold=options.category_threshold,
        seed=options.seed,
        groups=data.groups,
        synthetic=data.synthetic,
        structure=options.structure,
        search=candidates(options.classifiers, options.preprocessing),
        show_progress=options.show_progress,
        tuning_photos=options.tuning_photos,
        refuse_unseen=options.refuse_unseen,
        gallery_per_product=options.gallery_per_product,
    )


def _choices(options: TrainOptions, fitted: FittedHead, version: str) -> Choices:
    """What this training chose, for the enrolments that build on it."""
    return Choices(
        structure=fitted.head.structure,
        classifiers=dict(fitted.chosen or {}),
        target_precision=options.target_precision,
        refuse_unseen=options.refuse_unseen if fitted.novelty is not None else None,
        product_threshold=options.product_threshold,
        category_threshold=options.category_threshold,
        gallery_per_product=options.gallery_per_product,
        base_per_product=options.base_per_product,
        tuning_photos=options.tuning_photos,
        seed=options.seed,
        trained_version=version,
    )


def _report_inputs(report: dict[str, Any], cache: FeatureCache | None, augmenter: Augmenter | None, seed: int) -> None:
    """The feature cache's hits and the synthetic copies' settings, into the report."""
    if cache is not None:
        report["feature_cache"] = {"read": cache.hits, "computed": cache.misses}
        logger.info("features: %d read from the cache, %d computed", cache.hits, cache.misses)
    if augmenter is not None:
        report["synthetic"] = {"per_image": augmenter.copies, "transforms": list(augmenter.names), "seed": seed}


def _training_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report for the manifest: without the tables and curves (those are in report.json)."""
    bulky = ("cv_evaluation", "open_set", "open_set_by_product")
    summary = {key: value for key, value in report.items() if key not in bulky}
    if "open_set" in report:
        summary["open_set"] = {key: value for key, value in report["open_set"].items() if key != "curve"}
    return summary


def _extras_writer(
    options: TrainOptions,
    version: str,
    report: dict[str, Any],
    base: EnrolmentBase,
    *,
    spec: BackboneSpec,
    check: np.ndarray,
    recipe: FeatureRecipe,
    center: np.ndarray | None,
) -> Callable[[Path], dict[str, Any]]:
    """write_model's `write_files`: the report, the enrolment base and (unless the options say not) the ONNX graph."""

    def write_extras(staging: Path) -> dict[str, Any]:
        added: dict[str, Any] = {
            "report_files": write_report(staging, name=options.name, version=version, report=report)
        }
        layout = write_rows(staging, BASE_PREFIX, stored_base(base), None)
        added["enrolment_base"] = base_record(base, layout)
        if options.export_onnx:
            network, _ = load_network(spec, options.weights)  # float32 on the CPU, whatever trained
            difference = export_backbone(spec, network, staging / ONNX_FILE, check, recipe=recipe, center=center)
            record = {"file": ONNX_FILE, "opset": OPSET, "max_abs_difference": difference, "checked_on": len(check)}
            added["engines"] = {"onnxruntime": record}
        return added

    return write_extras
