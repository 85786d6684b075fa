"""Versioned model directories: write them atomically, verify every file's sha256 before anything is loaded.

Layout of one version (`<store>/<version>/`):
    manifest.json   name, version, backbone record, head settings, sha256 and size of every other file
    head.npz        the head's classifiers as arrays (loaded with allow_pickle=False); the manifest's `head`
                    names the structure (flat or category-first), each classifier's kind and classes, and the
                    refinements of products enrolled since the nodes were fitted (models.answer.refinements)
    labels-*.json   products and their categories, in the head's order (`labels`), and
    catalog-*.json  the product catalog, each record travelling into results (`catalog`): tables of JSON shards
                    (models.store.record_shards) that an enrolment adds one shard to; a version written before
                    them holds one labels.json and one catalog.json
    backbone.onnx   the backbone and its feature recipe as one ONNX graph for the CPU engine (`engines`)
    backbone.pt     a tuned backbone's weights (`partsight train --tune`; `backbone.weights_file`), for torch
    features.npz    the feature recipe's fitted mean, when it centres (the recipe itself: `features`)
    gallery-*.npz   the enrolled photos' feature vectors, products, ids and sha256 in content-named shards
                    (`gallery`: models.answer.gallery_rows); each product's spread in gallery-spread-*.json, a
                    table of shards like the catalog's (`gallery.spread`; one .npz before format 5)
    gallery-index-*.hnsw, gallery-index-*.npz  from 2,000 gallery photos, the photo index and its projection
                    (`gallery.index`: models.answer.photo_index)
    training-*.npz  the enrolment base's rows in shards (`enrolment_base`: models.train.enrolment_base)
    refinement-*.npz  one per product enrolled quickly since the nodes were fitted (the head's `refinements`)
Every file but the manifest is a hard link to a blob named by its sha256 (models.store.blobs): what two versions
have in common is on disk once. The manifest's `novelty` holds the novelty score and its threshold. Directories
written before recipes and galleries (no `features`, `gallery` or `novelty`) load as they were: the legacy recipe,
no novelty; those written before shards (one training.npz and gallery.npz) load as they were too.
A store holds several versions and a `current` link to the one served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.answerer import parts_problem
from models.answer.arrays import read_arrays, save_arrays
from models.answer.classifiers import Classifier
from models.answer.gallery import Gallery
from models.answer.gallery_rows import GalleryRows, read_gallery, rows_of, stored_spreads, write_gallery
from models.answer.head import ProductHead, logistic_classifier, restored_classifiers, saved_arrays
from models.answer.novelty import NoveltyModel
from models.answer.read_once import reading_once
from models.answer.refinements import read_refinements, write_refinements
from models.answer.row_shards import link_or_copy
from models.errors import ArtifactError, BackboneError, InvalidModel
from models.extract.recipe import LEGACY, FeatureRecipe
from models.store import blobs, versions
from models.store.catalog import Catalog
from models.store.record_shards import MalformedRecords, StoredTable, read_keyed, read_listed, write_keyed, write_listed
from models.store.versions import file_sha256, store_lock, verify_file

# listing, verifying and pointing `current` live in models.store.versions (numpy-free: the HTTP API uses them)
CURRENT, MANIFEST, READABLE_FORMATS = versions.CURRENT, versions.MANIFEST, versions.READABLE_FORMATS
resolve = versions.resolve
point_current = versions.point_current
FEATURES_FILE = "features.npz"
Means = tuple[np.ndarray | None, np.ndarray | None]  # the rows' mean, and the graph's where a consolidation re-centred

# 5: the catalog, the labels and the gallery's spreads as tables of JSON shards; 4: heads with refinements (quick
# enrolments); 3: the enrolment base and the gallery in shards (a release before them refuses it by its format,
# plainly); 2: heads of any classifier kind, flat or category-first; 1: one logistic regression (all still read)
FORMAT = 5
# 6: a version whose rows a consolidation re-centred, its features file holding the graph's own mean beside theirs
# (a release before it would serve the graph's features on rows centred elsewhere: it refuses the version, plainly)
RECENTRED_FORMAT = 6
CATALOG_PREFIX, LABELS_PREFIX, SPREAD_PREFIX = "catalog", "labels", "gallery-spread"
LABEL_COLUMNS = ("products", "categories")


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    manifest: dict[str, Any]
    head: ProductHead
    catalog: Catalog
    recipe: FeatureRecipe = LEGACY
    center: np.ndarray | None = None  # the mean the version's rows are centred on
    gallery: Gallery | None = None
    novelty: NoveltyModel | None = None
    # the catalog, the labels and the gallery's spreads as the version stores them (by "catalog", "labels", "spread";
    # none before tables): what the next version writes on top of
    tables: Mapping[str, StoredTable] = field(default_factory=dict)
    # the mean its ONNX graph centres on, where a consolidation re-centred the rows on `center` since (the ONNX engine
    # finishes the graph's features again: models.extract.engines.RecentredEngine); None: the graph centres on `center`
    graph_center: np.ndarray | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def backbone(self) -> dict[str, Any]:
        return dict(self.manifest["backbone"])

    @property
    def feature_space(self) -> str:
        """Names the space its features live in: versions with the same backbone weights, recipe and fitted mean
        (a training and the enrolments and consolidations built on it, until a consolidation re-centres the rows)
        compare features; others do not."""
        digest = hashlib.sha256(json.dumps([self.backbone.get("weights_sha256"), self.recipe.record()]).encode())
        if self.center is not None:
            digest.update(np.ascontiguousarray(self.center, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]


def new_version(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def write_model(
    store: Path,
    *,
    name: str,
    head: ProductHead,
    catalog: Catalog,
    backbone: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    version: str | None = None,
    write_files: Callable[[Path], Mapping[str, Any]] | None = None,
    recipe: FeatureRecipe = LEGACY,
    center: np.ndarray | None = None,
    graph_center: np.ndarray | None = None,  # the ONNX graph's mean, where the rows are centred on `center` instead
    gallery: Gallery | GalleryRows | None = None,
    novelty: NoveltyModel | None = None,
    locked: bool = False,
    builds_on: ModelBundle | None = None,
    keep_verified: bool = False,
) -> Path:
    """Write a new version under `store`, verify it, and point `current` at it (under the store's lock, unless
    the caller holds it: `locked`); nothing half-written is ever visible.

    `write_files(staging_dir)` may add files of its own (each gets its sha256 in the manifest) and returns
    entries merged into the manifest. `builds_on`: the version this one changes (an enrolment's, a
    consolidation's), whose catalog, labels and spreads shards it links, writing only what changed.
    `keep_verified`: the bundle its verification loaded is what this process's next load of the version returns
    (an enrolment in a worker, which serves the version at once; see _JustWritten).
    """
    store.mkdir(parents=True, exist_ok=True)
    version = version or new_version()
    final = store / version
    if final.exists():
        raise ArtifactError(f"version {version} already exists in {store}")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=store))
    staging.chmod(0o755)  # mkdtemp makes it private; a worker may run as another user
    try:
        rows = None if gallery is None else gallery if isinstance(gallery, GalleryRows) else rows_of(gallery)
        tables = _write_tables(staging, head, catalog, rows, builds_on)
        spread = tables.pop("spread", None)
        settings, recorded = _write_parts(staging, head, builds_on, recipe, (center, graph_center), novelty)
        if rows is not None:  # a gallery that grew links the shards of the version it grew from
            recorded["gallery"] = write_gallery(staging, rows, spread)
        recorded.update(tables)
        added = dict(write_files(staging)) if write_files else {}
        files = _file_records(staging)
        blobs.share(store, staging, files)  # a file another version holds already costs no bytes
        manifest = _manifest(name, version, backbone, head=settings, files=files, extra={**recorded, **(extra or {})})
        _write_json(staging / MANIFEST, {**manifest, **added})
        verified = load_model(staging)  # verified as a worker will verify it, before anything can serve it
        # in place, verified and current under the store's lock: never beside an enrolment, an activation or a prune
        with contextlib.nullcontext() if locked else store_lock(store):
            os.replace(staging, final)
            if keep_verified:
                _just_written.keep(final, replace(verified, path=final))
            point_current(store, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _just_written.forget(final)  # `current` did not move: nothing will take it
        raise
    return final


class _JustWritten:
    """The version this process wrote last with `keep_verified`, as its verification loaded it, for the first
    load_model of that version in this process: a worker swapping in the version its own enrolment just wrote takes
    it instead of reading and verifying every file a second time (0.45 s at 1,000 parts). Taken once, and only while
    every file of the version is the one written (the same inode, size and modification time, as
    versions.hashing_once trusts within one load); any later load reads and verifies the files again. A load of
    another version of the same store lets it go (it would never be taken: not held for the next enrolment)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: tuple[str, dict[str, tuple[int, ...]], ModelBundle] | None = None

    def keep(self, version_dir: Path, bundle: ModelBundle) -> None:
        folder = version_dir.resolve()
        with self._lock:
            self._kept = (str(folder), _fingerprint(folder), bundle)

    def forget(self, version_dir: Path) -> None:
        with self._lock:
            if self._kept is not None and self._kept[0] == str(version_dir.resolve()):
                self._kept = None

    def take(self, version_dir: Path) -> ModelBundle | None:
        folder = version_dir.resolve()
        with self._lock:
            if self._kept is None:
                return None
            kept_folder, fingerprint, bundle = self._kept
            if kept_folder != str(folder):
                if Path(kept_folder).parent == folder.parent:  # another version of its store served: never taken
                    self._kept = None
                return None
            self._kept = None
        try:
            same = _fingerprint(folder) == fingerprint
        except OSError:  # gone since: loaded from its files, which say what is wrong
            return None
        return replace(bundle, path=version_dir) if same else None


def _fingerprint(folder: Path) -> dict[str, tuple[int, ...]]:
    """Each file of a version folder by what versions.hashing_once trusts (versions.file_identity)."""
    return {entry.name: versions.file_identity(entry) for entry in folder.iterdir()}


_just_written = _JustWritten()


def _write_parts(  # noqa: PLR0917
    staging: Path,
    head: ProductHead,
    builds_on: ModelBundle | None,
    recipe: FeatureRecipe,
    centers: Means,
    novelty: NoveltyModel | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's own files in `staging`; the manifest's `head` and the other manifest entries they need. The
    nodes and refinements `builds_on` loaded and `head` keeps as they were are linked from its files, not written,
    hashed and shared again (head.npz is 7.6 MB at 1,000 parts, and a head holds up to 64 refinements)."""
    arrays, records = saved_arrays(head)
    if builds_on is not None and _same_nodes(head, records, builds_on):
        link_or_copy(builds_on.path / "head.npz", staging / "head.npz")
    else:
        save_arrays(staging / "head.npz", arrays)  # the nodes: the same bytes (one blob) until a refit changes them
    refinements = write_refinements(staging, head.refinements, _stored_refinements(builds_on))
    settings = {
        "structure": head.structure,
        "classifiers": records,
        "product_threshold": head.product_threshold,
        "category_threshold": head.category_threshold,
        **({"refinements": refinements} if refinements else {}),
    }
    recorded: dict[str, Any] = {"features": {"recipe": recipe.record(), "file": None}}
    center, graph_center = centers  # the rows' mean, and the graph's where it is another
    if center is not None:
        means = {"center": center} if graph_center is None else {"center": center, "graph_center": graph_center}
        save_arrays(staging / FEATURES_FILE, {key: np.asarray(mean, dtype=np.float32) for key, mean in means.items()})
        recorded["features"]["file"] = FEATURES_FILE
    if graph_center is not None:
        recorded["format"] = RECENTRED_FORMAT  # over _manifest's FORMAT: a release before it must refuse the version
    if novelty is not None:
        recorded["novelty"] = novelty.record()
    return settings, recorded


def _same_nodes(head: ProductHead, records: list[dict[str, Any]], builds_on: ModelBundle) -> bool:
    """Whether `head`'s nodes are the very classifiers `builds_on` loaded from its head.npz, recorded alike (a
    quick enrolment's head: its nodes untouched)."""
    loaded = builds_on.head.classifiers
    same = head.classifiers.keys() == loaded.keys() and all(head.classifiers[k] is loaded[k] for k in loaded)
    stored = builds_on.manifest.get("head")
    return same and isinstance(stored, Mapping) and stored.get("classifiers") == records


def _stored_refinements(builds_on: ModelBundle | None) -> dict[int, Path]:
    """The file each refinement `builds_on` loaded came from, by the refinement's identity (empty: none)."""
    if builds_on is None:
        return {}
    stored = builds_on.manifest.get("head")
    records = stored.get("refinements", []) if isinstance(stored, Mapping) else []
    if not isinstance(records, list) or len(records) != len(builds_on.head.refinements):
        return {}
    return {
        id(refinement): builds_on.path / str(record["file"])
        for refinement, record in zip(builds_on.head.refinements, records, strict=True)
        if isinstance(record, Mapping) and isinstance(record.get("file"), str)
    }


def _write_tables(
    staging: Path, head: ProductHead, catalog: Catalog, gallery: GalleryRows | None, builds_on: ModelBundle | None
) -> dict[str, Any]:
    """The catalog, the labels and the gallery's spreads as tables of shards, on top of `builds_on`'s; the
    manifest's records of them (by "catalog", "labels", "spread")."""
    tables = builds_on.tables if builds_on is not None else {}
    source = builds_on.path if builds_on is not None else None
    labels = {"products": list(head.products), "categories": list(head.categories)}
    records = {
        "catalog": write_keyed(staging, CATALOG_PREFIX, catalog, tables.get("catalog"), source).record(),
        "labels": write_listed(staging, LABELS_PREFIX, labels, tables.get("labels"), source).record(),
    }
    if gallery is not None:
        spreads = stored_spreads(gallery)
        records["spread"] = write_keyed(staging, SPREAD_PREFIX, spreads, tables.get("spread"), source).record()
    return records


def _file_records(staging: Path) -> dict[str, dict[str, Any]]:
    """The sha256 and size of every file written so far."""
    return {
        entry.name: {"sha256": file_sha256(entry), "bytes": entry.stat().st_size} for entry in sorted(staging.iterdir())
    }


def _manifest(
    name: str,
    version: str,
    backbone: Mapping[str, Any],
    *,
    head: Mapping[str, Any],
    files: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "backbone": dict(backbone),
        "head": dict(head),
        "files": dict(files),
        **extra,
    }


def served_signature(path: Path) -> tuple[str, str]:
    """What identifies the version `path` serves: its directory and its manifest's sha256. Cheap enough to poll;
    it changes when `current` moves or a version's manifest is rewritten."""
    version_dir = resolve(path)
    try:
        manifest = (version_dir / MANIFEST).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{version_dir}: unreadable manifest: {exc}") from exc
    return str(version_dir), hashlib.sha256(manifest).hexdigest()


def load_model(path: Path, *, searchable: bool = True) -> ModelBundle:
    """Verify and load a model version (or a store's current version). `searchable`: the gallery searched through
    its photo index when it has one (False: by its exact scan, without reading the graph into memory: an
    enrolment's base, which answers no frame).

    ArtifactError for a version that is not one: a file that fails verification or cannot be read is named, a
    file or record that is malformed or parts that do not fit together make "malformed model files". Anything
    else (a bug) propagates as itself. Each file is read for its sha256 once (versions.hashing_once) and decoded once
    (read_once.reading_once)."""
    version_dir = resolve(path)
    written = _just_written.take(version_dir) if searchable else None
    if written is not None:
        return written
    manifest = versions.read_manifest(version_dir)
    with versions.hashing_once(), reading_once():
        for name in manifest.get("files", {}):
            verify_file(version_dir, manifest, name)
        for required in versions.required_files(manifest):
            verify_file(version_dir, manifest, required)
        try:
            tables = _tables(version_dir, manifest)
            catalog = _catalog(version_dir, tables)
            head = _head(version_dir, manifest, tables)
            recipe, (center, graph_center) = _recipe(version_dir, manifest)
            gallery = _gallery(version_dir, manifest, head.products, tables, searchable)
            novelty = NoveltyModel.from_record(manifest["novelty"]) if "novelty" in manifest else None
            _check_parts_fit(head, recipe, gallery, novelty)
        except (InvalidModel, BackboneError) as exc:
            raise ArtifactError(f"{version_dir}: malformed model files: {exc}") from exc
    return ModelBundle(
        path=version_dir,
        manifest=manifest,
        head=head,
        catalog=catalog,
        recipe=recipe,
        center=center,
        gallery=gallery,
        novelty=novelty,
        tables=tables,
        graph_center=graph_center,
    )


def _tables(version_dir: Path, manifest: Mapping[str, Any]) -> dict[str, StoredTable]:
    """The catalog, the labels and the gallery's spreads as tables of shards, where the version stores them so
    (none before format 5)."""
    path_of = lambda name: verify_file(version_dir, manifest, name)  # noqa: E731
    tables = {}
    try:
        if "catalog" in manifest:
            tables["catalog"] = read_keyed(manifest["catalog"], path_of)
        if "labels" in manifest:
            tables["labels"] = read_listed(manifest["labels"], path_of, LABEL_COLUMNS)
        spread = manifest["gallery"].get("spread") if isinstance(manifest.get("gallery"), Mapping) else None
        if isinstance(spread, Mapping):  # before tables: one .npz that models.answer.gallery_rows reads
            tables["spread"] = read_keyed(spread, path_of)
    except MalformedRecords as exc:
        raise InvalidModel(str(exc)) from exc
    return tables


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"malformed model files: {path} is not readable JSON ({exc})") from exc


def _catalog(version_dir: Path, tables: Mapping[str, StoredTable]) -> Catalog:
    if "catalog" in tables:
        records = tables["catalog"].content
        for product, record in records.items():
            if not isinstance(record, dict) or record.get("product") != product:
                named = record.get("product") if isinstance(record, dict) else type(record).__name__
                raise InvalidModel(f"the catalog's record of {product!r} names {named!r}")
        return {str(p): record for p, record in records.items()}
    try:
        records = _read_json(version_dir / "catalog.json")["products"]
        return {str(record["product"]): record for record in records}
    except (KeyError, TypeError) as exc:  # a record that is not an object, or lacks its product
        raise InvalidModel(f"catalog.json: not a list of product records ({type(exc).__name__}: {exc})") from exc


def _head(version_dir: Path, manifest: Mapping[str, Any], tables: Mapping[str, StoredTable]) -> ProductHead:
    """The head from head.npz, its labels and the manifest's `head` (format 1: one logistic regression)."""
    arrays = read_arrays(version_dir / "head.npz")
    labels = tables["labels"].content if "labels" in tables else _read_json(version_dir / "labels.json")
    try:
        settings = manifest["head"]
        products, categories = tuple(labels["products"]), tuple(labels["categories"])
        structure = str(settings.get("structure", "flat"))
        thresholds = float(settings["product_threshold"]), float(settings["category_threshold"])
        records = None if manifest["format"] == 1 else settings["classifiers"]
        refinements = settings.get("refinements", [])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a key missing, a value of the wrong kind
        raise InvalidModel(f"the manifest's head or its labels ({type(exc).__name__}: {exc})") from exc
    classifiers: dict[str | None, Classifier]
    if records is None:
        if "coef" not in arrays or "intercept" not in arrays or arrays["coef"].ndim != 2:
            raise InvalidModel("head.npz: a format-1 head needs a 2-d coef and its intercept")
        classifiers = {None: logistic_classifier(products, arrays["coef"], arrays["intercept"])}
    else:
        classifiers = restored_classifiers(arrays, records)
    return ProductHead(
        products,
        categories,
        classifiers,
        structure=structure,
        product_threshold=thresholds[0],
        category_threshold=thresholds[1],
        refinements=read_refinements(refinements, lambda name: read_arrays(verify_file(version_dir, manifest, name))),
    )


def _check_parts_fit(
    head: ProductHead, recipe: FeatureRecipe, gallery: Gallery | None, novelty: NoveltyModel | None
) -> None:
    if recipe != LEGACY and recipe.dim != head.feature_dim:  # the legacy one: checked against the backbone
        raise InvalidModel(f"the recipe gives {recipe.dim}-d features, the head takes {head.feature_dim}")
    problem = parts_problem(head, gallery, novelty)  # last: it fits a distance score's density
    if problem is not None:
        raise InvalidModel(problem)


def _recipe(version_dir: Path, manifest: Mapping[str, Any]) -> tuple[FeatureRecipe, Means]:
    record = manifest.get("features")
    if record is None:
        return LEGACY, (None, None)  # written before recipes: the last layer, pooled
    try:
        recipe_record, file = record["recipe"], record.get("file")
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidModel(f"the manifest's features record ({type(exc).__name__}: {exc})") from exc
    recipe = FeatureRecipe.from_record(recipe_record)
    means: dict[str, np.ndarray] = {}
    if file:
        path = verify_file(version_dir, manifest, str(file))
        means = read_arrays(path, ("center",))
        for key in ("center", "graph_center"):
            if key in means and not np.issubdtype(means[key].dtype, np.number):
                raise InvalidModel(f"{path}: the mean {key!r} is of {means[key].dtype}, not numbers")
    center, graph_center = (means[k].astype(np.float32) if k in means else None for k in ("center", "graph_center"))
    if recipe.center and center is None:
        raise InvalidModel("the feature recipe centres but its mean is missing")
    for mean in (center, graph_center):
        if mean is not None and (not recipe.center or mean.shape != (recipe.dim,)):
            raise InvalidModel(f"the recipe's mean has shape {mean.shape}, for a {recipe.dim}-d recipe that centres")
    return recipe, (center, graph_center)


def _gallery(
    version_dir: Path,
    manifest: Mapping[str, Any],
    products: tuple[str, ...],
    tables: Mapping[str, StoredTable],
    searchable: bool,
) -> Gallery | None:
    rows = _gallery_rows(version_dir, manifest, products, tables)
    return None if rows is None else rows.gallery(products, searchable=searchable)


def _gallery_rows(
    version_dir: Path, manifest: Mapping[str, Any], products: tuple[str, ...], tables: Mapping[str, StoredTable]
) -> GalleryRows | None:
    record = manifest.get("gallery")
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise InvalidModel("the manifest's gallery record is not an object")
    try:
        path_of = lambda name: verify_file(version_dir, manifest, name)  # noqa: E731
        spreads = tables["spread"].content if "spread" in tables else None
        return read_gallery(record, path_of, products, version_dir, spreads)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidModel(f"the manifest's gallery record ({type(exc).__name__}: {exc})") from exc


def stored_gallery(bundle: ModelBundle) -> GalleryRows | None:
    """The bundle's gallery as its version stores it (every row of its shards, which are in use, each product's
    spread): what an enrolment grows. ArtifactError when its files fail verification or are malformed."""
    try:
        return _gallery_rows(bundle.path, bundle.manifest, bundle.head.products, bundle.tables)
    except InvalidModel as exc:
        raise ArtifactError(f"{bundle.path}: malformed model files: {exc}") from exc
