"""Enrolment: a new model version from the last one's cached training features plus a few new photos, in seconds.

A full `partsight train` keeps, in every version it writes, what an enrolment needs to build the next one
without the photos or the search:
    training.npz   the finished feature vector of every training row (photos and their synthetic copies, at most
                   `base_per_product` photos of a product), its product, photo, sha256 and whether it is synthetic
    manifest       `choices`: the head structure and each node's classifier and temperature that cross-validation
                   chose, the target precision, the never-seen share to refuse, the gallery's size, the seed
An enrolment then: computes the new photos' features with the version's own engine (the caller's
`features_of`), adds them to the rows, refits every node with the classifier chosen for it (a node that is new,
such as the category of a new product, gets the default classifier), recalibrates the novelty score and the
category threshold on leave-products-out folds of the rows (models.train.open_set), rebuilds the gallery, and writes
and verifies the version as training does; `current` moves only when all of that worked. The backbone, its
recipe and its mean do not change, so the ONNX graph is linked, not exported again.

Enrolments on one store run one after another (a lock file): each builds on the `current` of the moment it takes
the lock, so two at once both land, the second on top of the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.classifiers import Candidate
from models.answer.gallery import Gallery, build_gallery
from models.answer.gallery_rows import GalleryRows, rows_of
from models.answer.head import ProductHead
from models.answer.novelty import NoveltyModel
from models.answer.read_once import current_reads, reading_once
from models.answer.row_shards import StoredRows, link_or_copy, write_rows
from models.bundle import Means, ModelBundle, load_model, new_version, stored_gallery, write_model
from models.errors import ArtifactError, EnrolmentError, ImageError, InvalidModel, TrainingError
from models.store.catalog import Catalog
from models.store.enrolment_requests import check_catalog_record, check_product_id
from models.store.versions import current_hashes, hashing_once, resolve, store_lock, verify_file
from models.train.carried_scope import CarriedScope
from models.train.enrolment_base import (
    BASE_PREFIX,
    Choices,
    EnrolmentBase,
    base_record,
    capped_rows,
    new_photo_columns,
    read_stored_base,
)
from models.train.node_fitting import (
    DEFAULT_CANDIDATE,
    canonical_sample,
    fit_nodes,
    head_nodes,
    node_starts,
    resolve_structure,
)
from models.train.open_set import calibrate_open_set, fold_answers
from models.train.quick_enrolment import (
    Neighbours,
    confusable_with,
    gallery_neighbours,
    look_alikes,
    novelty_check,
    refine,
)
from models.train.report import write_report

logger = logging.getLogger(__name__)

# unchanged by an enrolment: hard-linked from the version it builds on (the ONNX graph; a tuned backbone's weights)
LINKED_FILES = ("backbone.onnx", "backbone.pt")

FeaturesOf = Callable[[ModelBundle, Sequence[bytes]], Sequence[np.ndarray | ImageError]]
_CARRIED = CarriedScope()  # what the last enrolment in this process read and wrote, for the next one
PHOTOS_PER_BATCH = 16  # photos an engine call takes, where the caller names no batch size
# quick enrolments a head carries at most: past them an enrolment waits for a running consolidation
# (enrolment_runs: RefinementsFull) or, with none running (consolidations that keep failing), refits every node.
# Each refinement a frame's probability reaches costs it about 30 us (bench.refinement_cost): on 660 look-alike
# parts, whose head spreads a frame's probability over most groups, 256 of them cost 7.5 ms a frame alone
MAX_REFINEMENTS = 64


def photo_features(
    prepare: Callable[[bytes], Any],
    compute: Callable[[list[Any]], Sequence[np.ndarray | ImageError]],
    photos: Sequence[bytes],
    batch: int = PHOTOS_PER_BATCH,
) -> list[np.ndarray | ImageError]:
    """Each photo's features, in order: `prepare` (decode) one by one, a photo it refuses keeps its ImageError;
    the rest through `compute` (the engine) `batch` at a time, as frames go."""
    prepared: list[Any] = []
    results: list[np.ndarray | ImageError | None] = []
    for data in photos:
        try:
            prepared.append(prepare(data))
            results.append(None)
        except ImageError as exc:
            results.append(exc)
    computed = iter([vector for i in range(0, len(prepared), batch) for vector in compute(prepared[i : i + batch])])
    return [next(computed) if result is None else result for result in results]


@dataclass(frozen=True)
class Refitted:
    head: ProductHead
    novelty: NoveltyModel | None
    gallery: GalleryRows | None  # None: a version written before galleries keeps none
    report: dict[str, Any]


@dataclass(frozen=True)
class _Calibrated:
    """The novelty score and the thresholds an enrolment ships (None: the head's default, 0.5)."""

    novelty: NoveltyModel | None
    product_threshold: float | None
    category_threshold: float | None
    report: dict[str, Any]


def refit(
    base: EnrolmentBase,
    categories_of: Mapping[str, str],
    choices: Choices,
    previous: NoveltyModel | None = None,
    previous_category_threshold: float | None = None,
    *,
    gallery: GalleryRows | None = None,
    start: ProductHead | None = None,
) -> Refitted:
    """The head, novelty score and gallery for `base`, with the classifiers `choices` names (no search). `gallery`:
    the base version's gallery grown by the new photos (None: built from the base's photos). `start`: the head
    refitted, whose nodes the new ones start from when it has their structure (fit_nodes).

    The novelty score is recalibrated on leave-products-out folds of the products with two photos or more (a
    product enrolled from one photo cannot be split into folds, but it is in the head and the gallery); when
    too few are left for folds, the `previous` score is kept as it was (its inputs are relative to each
    product's own spread, so it still reads the same way). TrainingError for rows nothing can be fitted on."""
    labels = base.products
    categories = np.array([categories_of[str(p)] for p in labels])
    structure = resolve_structure(choices.structure, categories)
    nodes = head_nodes(labels, categories, structure)
    starts = node_starts(start, structure)
    picks = {node.scope: choices.classifiers.get(node.scope, (DEFAULT_CANDIDATE, 1.0)) for node in nodes}
    products = tuple(str(p) for p in np.unique(labels))
    new_nodes = sorted(str(node.scope) for node in nodes if node.scope not in choices.classifiers)
    report: dict[str, Any] = {
        "images": int((~base.synthetic).sum()),
        "synthetic_images": int(base.synthetic.sum()),
        "products": len(products),
        "structure": structure,
        "nodes_with_default_classifier": new_nodes,
    }
    calibrated = _recalibrate(
        base,
        categories_of,
        choices,
        structure=structure,
        picks=picks,
        previous=previous,
        previous_category_threshold=previous_category_threshold,
    )
    report.update(calibrated.report)
    head = ProductHead(
        products,
        tuple(categories_of[p] for p in products),
        fit_nodes(nodes, picks, base.features, choices.seed, starts),
        structure=structure,
        product_threshold=0.5 if calibrated.product_threshold is None else calibrated.product_threshold,
        category_threshold=0.5 if calibrated.category_threshold is None else calibrated.category_threshold,
    )
    gallery = rows_of(_gallery_of(base, products, choices)) if gallery is None else gallery
    report.update(
        product_threshold=round(head.product_threshold, 6),
        category_threshold=round(head.category_threshold, 6),
        gallery={"photos": gallery.photos, "max_per_product": choices.gallery_per_product},
    )
    return Refitted(head, calibrated.novelty, gallery, report)


def _recalibrate(
    base: EnrolmentBase,
    categories_of: Mapping[str, str],
    choices: Choices,
    *,
    structure: str,
    picks: Mapping[str | None, tuple[Candidate, float]],
    previous: NoveltyModel | None,
    previous_category_threshold: float | None,
) -> _Calibrated:
    """The novelty score on leave-products-out folds of the products with two photos or more, or `previous`
    when too few are left or the choices keep it (`novelty_kept`); the thresholds the choices give, else those
    that go with the score. The sample and the folds are drawn over the rows in canonical_order, the order fit_model
    takes its rows in (this sample also leaves out products of one photo), so the stored rows' order (trained
    products first, then each enrolment's) does not move them."""
    product_threshold, category_threshold = choices.product_threshold, choices.category_threshold
    if choices.refuse_unseen is None:
        return _Calibrated(None, product_threshold, category_threshold, {})
    if choices.novelty_kept and previous is not None:
        category_threshold = previous_category_threshold if category_threshold is None else category_threshold
        product_threshold = 0.0 if product_threshold is None else product_threshold
        return _Calibrated(previous, product_threshold, category_threshold, {"novelty_kept": choices.novelty_kept})
    labels = base.products
    categories = np.array([categories_of[str(label)] for label in labels])
    rows = canonical_sample(
        labels, base.groups, base.synthetic, choices.tuning_photos, choices.seed, categories, base.sha256
    )  # the sample and folds a training of these photos draws
    names, photos = np.unique(labels[~base.synthetic], return_counts=True)
    rows = rows[np.isin(labels[rows], names[photos >= 2])]
    answers = fold_answers(
        base.features[rows],
        base.products[rows],
        base.groups[rows],
        base.synthetic[rows],
        categories_of=categories_of,
        structure=structure,
        chosen=picks,
        seed=choices.seed,
        max_per_product=choices.gallery_per_product,
    )
    product_threshold = 0.0 if product_threshold is None else product_threshold
    if answers is not None:
        calibration = calibrate_open_set(
            answers, refuse_unseen=choices.refuse_unseen, target_precision=choices.target_precision
        )
        if category_threshold is None:
            category_threshold = calibration.category_threshold
        return _Calibrated(calibration.novelty, product_threshold, category_threshold, dict(calibration.report))
    if previous is not None:
        kept = {"novelty_kept": "too few products with two photos to recalibrate: the base version's score"}
        if category_threshold is None:
            category_threshold = previous_category_threshold
        return _Calibrated(previous, product_threshold, category_threshold, kept)
    return _Calibrated(None, choices.product_threshold, choices.category_threshold, {})


def _gallery_of(base: EnrolmentBase, products: tuple[str, ...], choices: Choices) -> Gallery:
    """The gallery of the rows' real photos."""
    real = ~base.synthetic
    return build_gallery(
        base.features[real],
        base.products[real],
        list(base.photos[real]),
        list(base.sha256[real]),
        products,
        max_per_product=choices.gallery_per_product,
        seed=choices.seed,
    )


def base_of(bundle: ModelBundle) -> tuple[EnrolmentBase, Choices]:
    """The version's training rows and choices; EnrolmentError when it keeps none (trained before enrolment),
    ArtifactError when they are malformed."""
    stored, choices = stored_base_of(bundle)
    return _base_in_use(bundle, stored), choices


def stored_base_of(bundle: ModelBundle) -> tuple[StoredRows, Choices]:
    """The version's stored training rows (every row of its shards, and which are in use) and its choices."""
    record = bundle.manifest.get("enrolment_base")
    if record is None or "choices" not in bundle.manifest:
        raise EnrolmentError(
            f"version {bundle.version} keeps no training features to enrol on: train it once with this release "
            "(`partsight train`), then enrol",
            "not_enrollable",
        )
    try:
        if not isinstance(record, Mapping):
            raise InvalidModel("its record is not an object")
        stored = read_stored_base(record, lambda name: verify_file(bundle.path, bundle.manifest, name))
        choices = Choices.from_record(bundle.manifest["choices"])
    except (InvalidModel, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{bundle.path}: malformed enrolment base: {type(exc).__name__}: {exc}") from exc
    return stored, choices


def _base_in_use(bundle: ModelBundle, stored: StoredRows) -> EnrolmentBase:
    _check_dimension(bundle, stored)
    try:
        base = EnrolmentBase.from_columns(stored.used(), str(bundle.path))
    except InvalidModel as exc:
        raise ArtifactError(f"{bundle.path}: malformed enrolment base: {exc}") from exc
    return base


def _check_dimension(bundle: ModelBundle, stored: StoredRows) -> None:
    """ArtifactError unless the stored rows are rows of the head's dimension."""
    features = stored.columns["features"]
    if features.ndim != 2 or features.shape[1] != bundle.head.feature_dim:
        raise ArtifactError(
            f"{bundle.path}: the enrolment base holds rows of shape {features.shape[1:]}, the head takes "
            f"{bundle.head.feature_dim}-d rows"
        )


@dataclass(frozen=True)
class Enrolled:
    version: str
    path: Path
    product: str
    new_product: bool
    photos: int  # photos added
    duplicates: int  # photos already enrolled for this product, skipped
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    # existing products the new one's photos were answered as in more than 10% of its fold answers
    confusable_with: tuple[Mapping[str, Any], ...] = ()


def enrol(  # long: each step of an enrolment timed, under one lock
    store: Path,
    product: str,
    photos: Sequence[tuple[str, bytes]],
    *,
    record: Mapping[str, Any] | None,
    features_of: FeaturesOf,
    photo_prefix: str = "enrolments",
    details: Mapping[str, Any] | None = None,
    locked: bool = False,
    quick: bool = True,
    on_served: Callable[[str], None] | None = None,
    loaded: Callable[[], ModelBundle | None] | None = None,
) -> Enrolled:
    """Add `photos` of `product` to the store's current version as a new version, and make it current.

    `record` is the product's catalog record (required for a new product; for a known one it replaces the
    record). EnrolmentError (with a code) for anything the caller can fix; `current` stays where it was.
    `locked`: the caller already holds store_lock(store). `quick`: the head gains a refinement for the product
    (models.train.quick_enrolment) and a consolidation refits it later; otherwise (and for a known product whose
    category changes) every node is refitted now. `on_served(version)`: called once `current` names the new version,
    before the look-alike check (workers told then answer the product seconds earlier); what it raises propagates.
    `loaded()`: a version this process has loaded already (a worker's served model), built on when `current` still
    names it, instead of loading that version again."""
    started = time.monotonic()
    check_product_id(product)
    if not photos:
        raise EnrolmentError("an enrolment needs at least one photo", "no_photos")
    checked = check_catalog_record(product, record) if record is not None else None
    timings: dict[str, float] = {}
    carried = _CARRIED.take(store)
    with (
        contextlib.nullcontext() if locked else store_lock(store),
        hashing_once(carried.hashed),
        reading_once(carried.reads),
    ):
        timings["lock_s"] = time.monotonic() - started
        bundle = _current_bundle(store, loaded)
        stored, choices = stored_base_of(bundle)
        catalog, new_product = _catalog_with(bundle, product, checked)
        _check_dimension(bundle, stored)
        digests, fresh = _fresh_photos(stored, product, photos)
        mark = time.monotonic()
        vectors = _features(bundle, [photos[i] for i in fresh], features_of)
        timings["features_s"] = time.monotonic() - mark
        new = _NewPhotos(
            product, vectors, [f"{photo_prefix}/{photos[i][0]}" for i in fresh], [digests[i] for i in fresh]
        )
        stored, gallery = _with_photos(bundle, stored, new, choices)
        mark = time.monotonic()
        version = new_version()
        quick = quick and _category_kept(bundle, product, catalog) and len(bundle.head.refinements) < MAX_REFINEMENTS
        if quick:
            new = replace(new, neighbours=gallery_neighbours(bundle.gallery, new.vectors))  # read by two checks
            group = look_alikes(bundle.head, bundle.gallery, new.vectors, product, new.neighbours)
            grown = _rows_of(stored, [*group, product])  # a refinement reads its group's rows, not the catalog's
            refitted = _refine_for_enrolment(bundle, (grown, group, stored), new, catalog, (gallery, version, choices))
        else:
            grown = EnrolmentBase.from_columns(stored.used(), "the grown base")
            # no refinement, so no consolidation follows: the photo index gains the new photos now
            refitted = refit_for_enrolment(
                bundle, grown, choices, catalog, None if gallery is None else gallery.with_index()
            )
        timings["refine_s" if quick else "refit_s"] = time.monotonic() - mark
        mark = time.monotonic()
        summary = {
            "product": product,
            "new_product": new_product,
            "photos": len(fresh),
            "duplicates": len(photos) - len(fresh),
            "base_version": bundle.version,
            "trained_version": choices.trained_version,
            "mode": "quick" if quick else "refit",
            **(dict(details) if details else {}),
        }
        path = write_version(store, bundle, stored, choices, refitted, catalog, summary, version)
        _CARRIED.keep(store, path, current_hashes(), current_reads())  # the next enrolment builds on this version
        timings["write_s"] = time.monotonic() - mark
    seconds = time.monotonic() - started
    if on_served is not None:
        on_served(path.name)
    mark = time.monotonic()  # the version is served: the look-alike check no longer holds back the product
    quick_report = refitted.report.get("quick") or {}
    group = quick_report.get("group") or look_alikes(bundle.head, bundle.gallery, new.vectors, product)
    confusable = confusable_with(grown, product, list(group), seed=choices.seed)
    timings["look_alike_check_s"] = time.monotonic() - mark
    named = ", ".join(f"{c['product']} ({float(c['share']):.0%})" for c in confusable)
    logger.info(
        "enrolled %d photo(s) of %s%s: version %s in %.2f s (%s)%s",
        len(fresh),
        product,
        " (new product)" if new_product else "",
        path.name,
        seconds,
        ", ".join(f"{k} {v:.2f}" for k, v in timings.items()),
        f"; confusable with {named}" if named else "",
    )
    return Enrolled(
        path.name,
        path,
        product,
        new_product,
        len(fresh),
        len(photos) - len(fresh),
        seconds,
        timings,
        tuple(confusable),
    )


def _current_bundle(store: Path, loaded: Callable[[], ModelBundle | None] | None) -> ModelBundle:
    """The version `current` names: the one already `loaded` when it is that one, otherwise loaded now (its gallery
    answers no frame here: no graph read)."""
    bundle = loaded() if loaded is not None else None
    if bundle is not None and bundle.path == resolve(store):
        return bundle
    return load_model(store, searchable=False)


@dataclass(frozen=True)
class _NewPhotos:
    """The photos an enrolment adds: their product, features, ids and sha256."""

    product: str
    vectors: np.ndarray
    names: Sequence[str]
    digests: Sequence[str]
    neighbours: Neighbours | None = None  # their nearest photos of the base version's gallery (a quick enrolment's)


def _with_photos(
    bundle: ModelBundle, stored: StoredRows, new: _NewPhotos, choices: Choices
) -> tuple[StoredRows, GalleryRows | None]:
    """The base's stored rows and the version's gallery, each grown by the new photos."""
    gallery = stored_gallery(bundle)
    if gallery is not None:
        gallery = gallery.with_photos(
            new.vectors, new.product, new.names, new.digests, choices.gallery_per_product, choices.seed
        )
    return _grown(stored, new, choices), gallery


def _grown(stored: StoredRows, new: _NewPhotos, choices: Choices) -> StoredRows:
    """The stored rows with the new photos' after them, and at most `base_per_product` photos of each product in
    use (the new photos kept while they fit). Products and groups alone: no feature is read as float32 here."""
    groups = stored.columns["groups"]
    first = int(groups.max()) + 1 if len(groups) else 0
    added = new_photo_columns(new.vectors, new.product, new.names, new.digests, first)
    grown = stored.grown(added)
    mask = capped_rows(
        grown.columns["products"][grown.in_use].astype(str),
        grown.columns["groups"][grown.in_use].astype(np.int64),
        choices.base_per_product,
        choices.seed,
        keep=added["groups"],
    )
    return grown.keeping(mask)


def _catalog_with(bundle: ModelBundle, product: str, checked: dict[str, Any] | None) -> tuple[Catalog, bool]:
    """The version's catalog with the product's record (its new one, if given), and whether it is a new product."""
    catalog: Catalog = {key: dict(value) for key, value in bundle.catalog.items()}
    new_product = product not in bundle.head.products
    if new_product and checked is None:
        raise EnrolmentError(
            f"product {product!r} is not in version {bundle.version}: a new product needs its catalog record "
            "(name and category)",
            "unknown_product",
        )
    if checked is not None:
        catalog[product] = checked
    return catalog, new_product


def _fresh_photos(stored: StoredRows, product: str, photos: Sequence[tuple[str, bytes]]) -> tuple[list[str], list[int]]:
    """Every photo's sha256, and the positions of those not enrolled for `product` yet (nor given twice) among the
    base's rows in use (their products and sha256 alone: no copy of the features)."""
    digests = [hashlib.sha256(data).hexdigest() for _, data in photos]
    products, sha256 = (stored.columns[name][stored.in_use].astype(str) for name in ("products", "sha256"))
    known = set(sha256[products == product].tolist())
    fresh = [i for i, digest in enumerate(digests) if digest not in known and digest not in digests[:i]]
    if not fresh:
        raise EnrolmentError(f"every photo given is already enrolled for {product!r}", "duplicate_photos")
    return digests, fresh


def _category_kept(bundle: ModelBundle, product: str, catalog: Catalog) -> bool:
    """False when a known product's record moves it to another category (its nodes must be refitted)."""
    if product not in bundle.head.products:
        return True
    return bool(bundle.head.categories[bundle.head.products.index(product)] == str(catalog[product]["category"]))


def _rows_of(stored: StoredRows, products: Sequence[str]) -> EnrolmentBase:
    """The rows in use of `products` alone, as a base (features as float32): at 1,000 parts x 20 photos, 500 rows
    converted instead of 20,000."""
    try:
        return EnrolmentBase.from_columns(stored.used_where(np.isin(stored.columns["products"], products)), "the base")
    except InvalidModel as exc:
        raise ArtifactError(f"malformed enrolment base: {exc}") from exc


def _refine_for_enrolment(
    bundle: ModelBundle,
    rows: tuple[EnrolmentBase, list[str], StoredRows],
    new: _NewPhotos,
    catalog: Catalog,
    made: tuple[GalleryRows | None, str, Choices],
) -> Refitted:
    """The base version's head with a refinement for the new photos, its novelty score kept and checked. `rows`:
    the group's rows (the new product's and its look-alikes'), the look-alikes, and every stored row; `made`: the
    grown gallery, the version being written and the choices."""
    group_rows, group, stored = rows
    gallery, version, choices = made
    category = str(catalog[new.product]["category"])
    try:
        head, report = refine(
            bundle.head, group_rows, (new.product, category), group=group, source=version, seed=choices.seed
        )
    except (TrainingError, InvalidModel) as exc:
        raise EnrolmentError(f"the head cannot take the product with these photos: {exc}", "refit_failed") from exc
    if gallery is not None and bundle.novelty is not None:
        report["novelty_check"] = novelty_check(
            head, bundle.gallery, gallery.spread, bundle.novelty, new.vectors, new.product, new.neighbours
        )
    synthetic = np.asarray(stored.columns["synthetic"], dtype=bool)[stored.in_use]
    report.update(
        images=int((~synthetic).sum()),
        synthetic_images=int(synthetic.sum()),
        products=len(head.products),
        structure=head.structure,
        product_threshold=round(head.product_threshold, 6),
        category_threshold=round(head.category_threshold, 6),
    )
    return Refitted(head, bundle.novelty, gallery, report)


def refit_for_enrolment(
    bundle: ModelBundle, grown: EnrolmentBase, choices: Choices, catalog: Catalog, gallery: GalleryRows | None = None
) -> Refitted:
    """refit on the grown rows in the head's own structure (a consolidation may have chosen it instead of the
    training's: its nodes the training did not have take the default classifier); EnrolmentError `refit_failed`
    for rows a head cannot be fitted on (anything else is a bug, and propagates as itself)."""
    categories_of = {p: str(catalog[p]["category"]) for p in set(grown.products.tolist())}
    if bundle.head.structure != choices.structure:
        choices = replace(choices, structure=bundle.head.structure)
    try:
        return refit(
            grown,
            categories_of,
            choices,
            bundle.novelty,
            bundle.head.category_threshold,
            gallery=gallery,
            start=bundle.head,
        )
    except (TrainingError, InvalidModel) as exc:
        raise EnrolmentError(f"the head cannot be refitted with these photos: {exc}", "refit_failed") from exc


def _features(bundle: ModelBundle, photos: Sequence[tuple[str, bytes]], features_of: FeaturesOf) -> np.ndarray:
    results = features_of(bundle, [data for _, data in photos])
    rows = []
    for (name, _), result in zip(photos, results, strict=True):
        if isinstance(result, ImageError):
            raise EnrolmentError(f"photo {name}: {result.message}", result.code)
        rows.append(np.asarray(result, dtype=np.float32))
    vectors = np.stack(rows)
    if vectors.shape[1] != bundle.head.feature_dim:
        raise ArtifactError(
            f"the engine gave {vectors.shape[1]}-d features, version {bundle.version}'s head takes "
            f"{bundle.head.feature_dim}"
        )
    return vectors


def write_version(  # noqa: PLR0917
    store: Path,
    bundle: ModelBundle,
    rows: StoredRows,
    choices: Choices,
    refitted: Refitted,
    catalog: Catalog,
    summary: dict[str, Any],
    version: str | None = None,
    *,
    kind: str = "enrolment",
    centers: Means | None = None,
) -> Path:
    """Write the version an enrolment (or, `kind` "consolidation", a consolidation) built on `bundle`, under the
    store's lock the caller holds, and make it current; `summary` goes into its manifest and report as `kind`.
    `centers`: the mean `rows` are centred on and the graph's, where a consolidation re-centred them (else the
    bundle's own)."""
    center, graph_center = (bundle.center, bundle.graph_center) if centers is None else centers
    previous = bundle.manifest
    carried: dict[str, Any] = {key: previous[key] for key in ("training", "engines") if key in previous}

    def write_extras(staging: Path) -> dict[str, Any]:
        for name in LINKED_FILES:
            if name in previous.get("files", {}):
                link_or_copy(bundle.path / name, staging / name)
        layout = write_rows(staging, BASE_PREFIX, rows, bundle.path)  # the base's own shards linked, one added
        report = {**refitted.report, kind: summary, "target_precision": choices.target_precision}
        files = write_report(staging, name=bundle.name, version=staging.name, report=report)
        return {"report_files": files, "enrolment_base": base_record(rows, layout)}

    return write_model(
        store,
        name=bundle.name,
        head=refitted.head,
        catalog={p: catalog[p] for p in refitted.head.products},
        backbone=bundle.backbone,
        extra={
            **carried,
            "choices": choices.record(),
            kind: {**summary, "open_set": _open_set_summary(refitted.report)},
        },
        write_files=write_extras,
        version=version,
        locked=True,  # enrol holds the store's lock
        builds_on=bundle,  # its catalog and labels shards linked, one shard of what changed added
        recipe=bundle.recipe,
        center=center,
        graph_center=graph_center,
        gallery=refitted.gallery,
        novelty=refitted.novelty,
        keep_verified=kind == "enrolment",  # a worker serves the version it enrolled at once
    )


def _open_set_summary(report: Mapping[str, Any]) -> dict[str, Any] | None:
    curve = report.get("open_set")
    if not isinstance(curve, Mapping):
        return None
    return {key: value for key, value in curve.items() if key != "curve"}
