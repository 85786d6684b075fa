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
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from models.answer.gallery import DEFAULT_MAX_PER_PRODUCT, build_gallery
from models.answer.gallery_rows import rows_of
from models.answer.novelty import DEFAULT_REFUSE_UNSEEN
from models.answer.row_shards import write_rows
from models.bundle import new_version, write_model
from models.errors import DatasetError, ImageError
from models.extract.backbones import DEFAULT_BACKBONE, BackboneSpec, get_backbone, load_network
from models.extract.decode import decode_image, decode_photo, resize_center_crop
from models.extract.feature_cache import FeatureCache
from models.extract.features import FeatureExtractor, choose_device
from models.extract.heap import release_free_heap
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
from models.store.catalog import Catalog, categories_of, load_catalog
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
from models.train.head_fitting import AUTO, FittedHead, fit_searched, on_tuning_folds, progress, search_for
from models.train.node_fitting import (
    DEFAULT_CANDIDATE,
    Node,
    canonical_sample,
    fold_count,
    photo_folds,
    tune_node,
)
from models.train.open_set import HiddenFold
from models.train.open_set_verdict import open_set_verdict, why_not_kept
from models.train.report import write_report
from models.train.tuning import FoldNetwork, TuneOptions, tune

logger = logging.getLogger(__name__)

ONNX_CHECK_PHOTOS = 8  # training photos the exported graph must match torch on
TUNED_WEIGHTS_FILE = "backbone.pt"  # a tuned version's own backbone weights (torch.load(weights_only=True))
NOVELTY_FROM_TUNING = (
    "calibrated on the tuning's folds' networks, each of which never learned the products it hid: on the rows of "
    "the shipped network, which learned them all, a refit would promise refusals that never-seen products do not get"
)
TUNE_TRANSFORMS = ("translate", "reflect", "brightness", "rotate")  # where the options turned every transform off
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
    # one block for every row, filled in place: rows kept as each batch's own small arrays scattered over the
    # heap between the backbone's large transient buffers, which could then not be given back (at 50,000 photos
    # the process held 3.4 GB where the rows are 650 MB), and stacking them at the end copied them all once more
    rows = np.empty((len(images) * len(variants), extractor.feature_dim), dtype=np.float32)
    keys: list[str | None] = [None] * len(rows)
    waiting: list[tuple[int, np.ndarray]] = []

    def run_waiting() -> None:
        computed = extractor(np.stack([array for _, array in waiting]))
        for (row, _), vector in zip(waiting, computed, strict=True):
            rows[row] = vector
            key = keys[row]
            if cache is not None and key is not None:
                cache.put(key, vector)
        waiting.clear()
        release_free_heap()  # the batch's transient buffers, given back (models/extract/heap.py)

    for index, item in enumerate(images):
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{item.path}: cannot be used for training: {exc}") from exc
        photo_keys = [cache.key(data, variant) for variant in variants] if cache is not None else [None] * len(variants)
        cached = [cache.get(key) if cache is not None and key else None for key in photo_keys]
        cached = [vector if vector is not None and vector.shape == rows.shape[1:] else None for vector in cached]
        inputs = model_inputs(item, data, size, augmenter) if any(v is None for v in cached) else []
        for position, (key, vector) in enumerate(zip(photo_keys, cached, strict=True)):
            row = index * len(variants) + position
            keys[row] = key
            if vector is None:
                waiting.append((row, inputs[position]))
            else:
                rows[row] = vector
        if len(waiting) >= batch_size:
            run_waiting()
        update(index + 1)
    if waiting:
        run_waiting()
    synthetic = np.tile(np.arange(len(variants)) > 0, len(images))
    products = [item.product for item in images for _ in variants]
    return TrainingSet(rows, products, np.repeat(np.arange(len(images)), len(variants)), synthetic)


def choose_recipe(
    superset: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    recipes: Sequence[FeatureRecipe],
    seed: int,
    tuning_photos: int | None,
    categories: np.ndarray | None = None,
    photo_keys: np.ndarray | None = None,
) -> tuple[FeatureRecipe, dict[str, float]]:
    """The recipe with the best cross-validated macro-F1 of one flat default classifier, on photo folds (and a
    tuning sample) drawn over the rows in canonical_order, as fit_model draws the search's (`photo_keys`: each
    row's photo's sha256), so the choice does not depend on the order the photos were read in; an earlier, cheaper
    recipe wins ties. With too few photos to cross-validate, models.extract.recipe.DEFAULT when it is among
    `recipes`, else the first."""
    fallback = DEFAULT if DEFAULT in recipes else recipes[0]
    if len(recipes) == 1:
        return recipes[0], {}
    tuning = canonical_sample(labels, groups, synthetic, tuning_photos, seed, categories, photo_keys)
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
    classifiers: tuple[str, ...] | None = None  # None: search_for(the catalog's size)
    preprocessing: tuple[str, ...] | None = None
    tuning_photos: int | None = 3000  # cross-validate on whole products of about this many photos (None: all)
    tune: TuneOptions | None = None  # tune the backbone's last blocks to the catalog first (models.train.tuning)


def photo_ids(images: Sequence[LabelledImage], root: Path) -> tuple[list[str], list[str]]:
    """Each photo's stable id: its path under the image folder, and the sha256 of its bytes."""
    paths = [item.path.relative_to(root).as_posix() for item in images]
    return paths, [file_sha256(item.path) for item in images]


def train(options: TrainOptions) -> Path:
    """Train and write a new model version; returns its directory."""
    with tempfile.TemporaryDirectory(prefix="partsight-tuning-") as workdir:  # a tuned backbone's weights, until kept
        return _train(options, Path(workdir))


def _train(options: TrainOptions, workdir: Path) -> Path:  # long: one call per step, most with a line per argument
    catalog = load_catalog(options.catalog)
    images = scan_images(options.images, catalog)
    spec = get_backbone(options.backbone)
    tuned, tuning, tuning_folds = _tuned_weights(options, spec, images, workdir)
    augmenter = _augmenter(options)
    paths, digests = photo_ids(images, options.images)
    rows = _rows(options, spec, (images, digests), augmenter, catalog, tuned or options.weights)
    hidden = _hidden_folds(options, spec, images, augmenter, rows.recipe, tuning_folds, workdir)  # none without novelty
    if hidden and tuning is not None:  # a kept tuning whose folds hid products: does it keep the open set?
        rows, hidden = _open_set_checked(
            options, spec, (images, digests), augmenter, catalog, (rows, hidden), tuning_folds, tuning
        )
        tuned = tuned if tuning["kept"] else None
    elif tuned is not None and tuning is not None:
        tuning["open_set"] = {"judged": False, "why": _WHY_OPEN_SET_UNJUDGED}
    logger.info("training on %d images of %d products", len(images), len({i.product for i in images}))
    data, features, recipe, center, weights_sha256 = (
        rows.data,
        rows.features,
        rows.recipe,
        rows.center,
        rows.weights_sha256,
    )
    labels = np.asarray(data.products)
    fitted = _fit_head(options, features, data, catalog, hidden, np.asarray(digests)[data.groups])
    del hidden
    head, report = fitted.head, fitted.report
    version = new_version()
    base = EnrolmentBase(
        features, labels, data.groups, data.synthetic, np.asarray(paths)[data.groups], np.asarray(digests)[data.groups]
    ).capped(options.base_per_product, options.seed)
    report["features"] = {"recipe": recipe.record(), "label": recipe.label, "cv_macro_f1": rows.recipe_scores}
    real = np.flatnonzero(~data.synthetic)  # rows of the photos themselves, in `images` order
    gallery = build_gallery(
        features if len(real) == len(features) else features[real],  # no copy without synthetic rows
        labels[real],
        paths,
        digests,
        head.products,
        max_per_product=options.gallery_per_product,
        seed=options.seed,
    )
    gallery_rows = rows_of(gallery).with_index(threads=os.cpu_count() or 1)  # past INDEX_MIN_PHOTOS: a photo index
    report["gallery"] = {
        "photos": len(gallery.features),
        "max_per_product": options.gallery_per_product,
        "photo_index": gallery_rows.index is not None,
    }
    _report_inputs(report, rows.cache, augmenter, options.seed)
    if tuning is not None:
        report["tuning"] = tuning
    backbone = {
        "name": spec.name,
        "feature_dim": recipe.dim,
        "input_size": spec.input_size,
        "weights_sha256": weights_sha256,
        **({"weights_file": TUNED_WEIGHTS_FILE} if tuned else {}),
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
            options, version, report, base, spec=spec, check=check, recipe=recipe, center=center, tuned=tuned
        ),
        recipe=recipe,
        center=center,
        gallery=gallery_rows,
        novelty=fitted.novelty,
    )


_WHY_OPEN_SET_UNJUDGED = "no novelty score asked for (--refuse-unseen off), or no fold hid a product (too few products)"
_WHY_OPEN_SET_UNSCORED = (
    "the folds' hidden products could not be scored (none among the photos sampled, a product of one photo, or no "
    "known photo left): the tuning is kept on its top-1 alone"
)


@dataclass(frozen=True)
class _Rows:
    """One network's finished features of every training row, and what they were made with."""

    weights_sha256: str
    cache: FeatureCache | None
    data: TrainingSet  # the rows, without their superset features (650 MB at 50,000)
    recipe: FeatureRecipe
    recipe_scores: dict[str, float]
    center: np.ndarray | None
    features: np.ndarray


def _rows(  # noqa: PLR0917
    options: TrainOptions,
    spec: BackboneSpec,
    photos: tuple[Sequence[LabelledImage], Sequence[str]],
    augmenter: Augmenter | None,
    catalog: Catalog,
    weights: Path | None,
) -> _Rows:
    """Every row's features from the backbone with `weights` (None: its packaged ones), finished with the recipe
    cross-validation chooses on them; `photos`: the images and each one's sha256 (photo_ids)."""
    images, digests = photos
    extractor = FeatureExtractor(spec, weights=weights, device=options.device, cpu_threads=None, superset=True)
    weights_sha256 = file_sha256(extractor.weights_path)
    namespace = f"{spec.name}:{weights_sha256}:{spec.input_size}:superset-{SUPERSET_VERSION}"
    cache = FeatureCache(options.cache or options.out / ".feature-cache", namespace) if options.use_cache else None
    data = extract_features(
        list(images),
        extractor,
        batch_size=options.batch_size,
        show_progress=options.show_progress,
        augmenter=augmenter,
        cache=cache,
    )
    recipe, recipe_scores, center, features = _recipe_and_features(options, data, catalog, digests)
    rows = TrainingSet(features[:0], data.products, data.groups, data.synthetic)
    return _Rows(weights_sha256, cache, rows, recipe, recipe_scores, center, features)


def _open_set_checked(  # noqa: PLR0917
    options: TrainOptions,
    spec: BackboneSpec,
    photos: tuple[Sequence[LabelledImage], Sequence[str]],
    augmenter: Augmenter | None,
    catalog: Catalog,
    tuned: tuple[_Rows, list[HiddenFold]],
    folds: Sequence[FoldNetwork],
    tuning: dict[str, Any],
) -> tuple[_Rows, list[HiddenFold]]:
    """The tuned rows and their folds where the tuned network keeps the open set (models.train.open_set_verdict),
    else the frozen backbone's rows and no folds; `tuning` (the record) gains the verdict, and kept=False with why."""
    tuned_rows, tuned_folds = tuned
    assert options.refuse_unseen is not None and options.tune is not None  # else no tuned folds
    logger.info("features from the frozen backbone, to judge the tuning on never-seen products")
    frozen = _rows(options, spec, photos, augmenter, catalog, options.weights)
    verdict = open_set_verdict(
        tuned_folds,
        [
            HiddenFold(np.asarray(fold.hidden), frozen.features, np.isin(frozen.data.groups, fold.held))
            for fold in folds
        ],
        np.asarray(frozen.data.products),
        frozen.data.groups,
        frozen.data.synthetic,
        categories_of=categories_of(catalog),
        refuse_unseen=options.refuse_unseen,
        margin=options.tune.margin,
        seed=options.seed,
        max_per_product=options.gallery_per_product,
        tuning_photos=options.tuning_photos,
    )
    tuning["open_set"] = verdict if verdict is not None else {"judged": False, "why": _WHY_OPEN_SET_UNSCORED}
    if verdict is None or verdict["kept"]:
        return tuned_rows, tuned_folds
    tuning["kept"] = False
    tuning["why"] = why_not_kept(verdict)
    logger.warning("the backbone is not tuned: %s", tuning["why"])
    return frozen, []


def _tuned_weights(
    options: TrainOptions, spec: BackboneSpec, images: Sequence[LabelledImage], workdir: Path
) -> tuple[Path | None, dict[str, Any] | None, tuple[FoldNetwork, ...]]:
    """The tuned backbone's weights file where the options ask for tuning and it beat the frozen backbone (None:
    the frozen weights), what the tuning measured (None: not asked for), and its folds' networks where it is kept
    (each never learned the products it hid)."""
    if options.tune is None:
        return None, None, ()
    import torch  # noqa: PLC0415  # training imports torch anyway; said here where it is used

    network, _ = load_network(spec, options.weights)
    augmenter = Augmenter(
        names=options.transforms or TUNE_TRANSFORMS,
        copies=options.tune.copies,
        seed=options.seed,
        background=BackgroundReplacer(backgrounds_from_folder(options.backgrounds)) if options.backgrounds else None,
    )

    def inputs(index: int) -> list[np.ndarray]:
        item = images[index]
        return model_inputs(item, item.path.read_bytes(), spec.input_size, augmenter)

    logger.info("tuning the backbone on %d photos (and %d copies of each)", len(images), options.tune.copies)
    result = tune(
        network,
        inputs,
        [item.product for item in images],
        views=1 + options.tune.copies,
        mean=spec.mean,
        std=spec.std,
        options=replace(options.tune, device=str(choose_device(options.device))),  # a GPU where training has one
    )
    if not result.kept:
        return None, result.record, ()
    path = workdir / TUNED_WEIGHTS_FILE
    torch.save(result.state, path)
    return path, result.record, result.folds


def _hidden_folds(  # noqa: PLR0917
    options: TrainOptions,
    spec: BackboneSpec,
    images: list[LabelledImage],
    augmenter: Augmenter | None,
    recipe: FeatureRecipe,
    folds: Sequence[FoldNetwork],
    workdir: Path,
) -> list[HiddenFold]:
    """Every row's finished features from each tuning fold's network (the rows extract_features makes, with the
    recipe chosen), to calibrate the novelty score on products and photos a network never learned; none
    untuned."""
    import torch  # noqa: PLC0415  # as in _tuned_weights

    if options.refuse_unseen is None:  # no novelty score to calibrate on them
        return []
    hidden: list[HiddenFold] = []
    for index, fold in enumerate(folds):
        path = workdir / f"fold-{index}.pt"
        torch.save(fold.state, path)
        logger.info("features from tuning fold %d's network, which never learned %d products", index, len(fold.hidden))
        extractor = FeatureExtractor(spec, weights=path, device=options.device, cpu_threads=None, superset=True)
        data = extract_features(
            images, extractor, batch_size=options.batch_size, show_progress=options.show_progress, augmenter=augmenter
        )
        combined = combine_parts(data.features, recipe)
        center = fit_center(combined[~data.synthetic], recipe)
        known = np.isin(data.groups, fold.held)  # the rows of the photos it held out (data.groups: the photo's index)
        del data, extractor  # the superset rows
        hidden.append(HiddenFold(np.asarray(fold.hidden), finish(combined, center), known))
        path.unlink()
    return hidden


def _recipe_and_features(
    options: TrainOptions, data: TrainingSet, catalog: Catalog, digests: Sequence[str]
) -> tuple[FeatureRecipe, dict[str, float], np.ndarray | None, np.ndarray]:
    """The feature recipe cross-validation chooses, its scores, its fitted mean and the finished features
    (`digests`: each photo's sha256, in `data`'s photo order)."""
    recipe, recipe_scores = choose_recipe(
        data.features,
        np.asarray(data.products),
        data.groups,
        data.synthetic,
        recipes=options.recipes,
        seed=options.seed,
        tuning_photos=options.tuning_photos,
        categories=np.array([str(catalog[product]["category"]) for product in data.products]),
        photo_keys=np.asarray(digests)[data.groups],
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


def _fit_head(  # noqa: PLR0917
    options: TrainOptions,
    features: np.ndarray,
    data: TrainingSet,
    catalog: Catalog,
    hidden: Sequence[HiddenFold],
    photo_keys: np.ndarray,
) -> FittedHead:
    """The head fitted with the options' settings, on the finished features (the novelty score on `hidden`'s
    folds where the tuning made them); `photo_keys`: each row's photo's sha256 (fit_model)."""
    products = len(set(np.asarray(data.products).tolist()))
    return fit_searched(
        options,
        features,
        data.products,
        data.groups,
        data.synthetic,
        categories_of(catalog),
        structure=options.structure,
        search=search_for(products, options.classifiers, options.preprocessing),
        show_progress=options.show_progress,
        hidden_folds=hidden,
        photo_keys=photo_keys,
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
        structure_for=len(fitted.head.products) if options.structure == AUTO else 0,
        novelty_kept=NOVELTY_FROM_TUNING if on_tuning_folds(fitted.report) else "",
        search_named=(options.classifiers, options.preprocessing),
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
    tuned: Path | None,
) -> Callable[[Path], dict[str, Any]]:
    """write_model's `write_files`: the report, the enrolment base, a tuned backbone's weights and (unless the
    options say not) the ONNX graph."""

    def write_extras(staging: Path) -> dict[str, Any]:
        added: dict[str, Any] = {
            "report_files": write_report(staging, name=options.name, version=version, report=report)
        }
        rows = stored_base(base)
        layout = write_rows(staging, BASE_PREFIX, rows, None)
        added["enrolment_base"] = base_record(rows, layout)
        if tuned is not None:  # the torch engines load the version's own weights
            shutil.copyfile(tuned, staging / TUNED_WEIGHTS_FILE)
        if options.export_onnx:
            network, _ = load_network(spec, tuned or options.weights)  # float32 on the CPU, whatever trained
            difference = export_backbone(spec, network, staging / ONNX_FILE, check, recipe=recipe, center=center)
            record = {"file": ONNX_FILE, "opset": OPSET, "max_abs_difference": difference, "checked_on": len(check)}
            added["engines"] = {"onnxruntime": record}
        return added

    return write_extras
