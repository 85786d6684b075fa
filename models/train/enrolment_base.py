"""What an enrolment builds on: the rows of the last training (`EnrolmentBase`, saved as training.npz in every
version) and the choices that training made (`Choices`, in the manifest), so an enrolment refits without photos
or a search."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.arrays import read_arrays, save_arrays
from models.answer.classifiers import Candidate
from models.answer.gallery import DEFAULT_MAX_PER_PRODUCT
from models.answer.row_shards import RowLayout, StoredRows, read_rows
from models.errors import InvalidModel

BASE_FILE = "training.npz"  # the base as one file: versions written before shards
BASE_PREFIX = "training"  # the base's shards: training-<sha256[:16]>.npz (models.answer.row_shards)
COLUMNS = ("features", "products", "groups", "synthetic", "photos", "sha256")


DEFAULT_BASE_PER_PRODUCT = 1000  # photos of a product (with their copies) kept for enrolments


@dataclass(frozen=True)
class EnrolmentBase:
    """Every training row an enrolment refits on."""

    features: np.ndarray  # (N, D) float32 finished features (stored as float16)
    products: np.ndarray  # (N,) str
    groups: np.ndarray  # (N,) int: the photo of each row (a synthetic copy shares its photo's)
    synthetic: np.ndarray  # (N,) bool
    photos: np.ndarray  # (N,) str: the photo's id (its path under images/, or enrolments/<id>/<name>)
    sha256: np.ndarray  # (N,) str: the photo's bytes

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features.ndim != 2 or not all(
            len(a) == n for a in (self.products, self.groups, self.synthetic, self.photos, self.sha256)
        ):
            raise InvalidModel("an enrolment base needs one product, photo, sha256 and flag per feature row")

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def columns(self) -> dict[str, np.ndarray]:
        """The rows as stored (features as float16)."""
        return {
            "features": self.features.astype(np.float16),
            "products": self.products.astype(str),
            "groups": self.groups.astype(np.int64),
            "synthetic": self.synthetic.astype(bool),
            "photos": self.photos.astype(str),
            "sha256": self.sha256.astype(str),
        }

    def save(self, path: Path) -> None:
        """One .npz of every row (the layout before shards; versions now store rows with `stored_rows`)."""
        save_arrays(path, self.columns())

    @classmethod
    def load(cls, path: Path) -> EnrolmentBase:
        """ArtifactError naming the file when it is not an .npz of these rows; InvalidModel when they do not fit."""
        return cls.from_columns(read_arrays(path, COLUMNS), str(path))

    @classmethod
    def from_columns(cls, stored: Mapping[str, np.ndarray], where: str) -> EnrolmentBase:
        try:
            numbers: dict[str, np.ndarray] = {
                "features": stored["features"].astype(np.float32),
                "groups": stored["groups"].astype(np.int64),
                "synthetic": stored["synthetic"].astype(bool),
            }
        except (TypeError, ValueError) as exc:  # an array of text where numbers belong
            raise InvalidModel(f"{where}: {exc}") from exc
        return cls(
            products=stored["products"].astype(str),
            photos=stored["photos"].astype(str),
            sha256=stored["sha256"].astype(str),
            **numbers,
        )

    def capped(self, per_product: int, seed: int = 0, keep: np.ndarray | None = None) -> EnrolmentBase:
        """At most `per_product` photos of each product (with their copies): a seeded random sample, always
        holding the photos (groups) in `keep` (what an operator just enrolled) while they fit. Itself, not a copy,
        when every row is kept."""
        mask = self.capped_mask(per_product, seed, keep)
        return self if mask.all() else self.rows(mask)

    def capped_mask(self, per_product: int, seed: int = 0, keep: np.ndarray | None = None) -> np.ndarray:
        """The rows `capped` keeps, as a mask (capped_rows)."""
        return capped_rows(self.products, self.groups, per_product, seed, keep)

    def rows(self, mask: np.ndarray) -> EnrolmentBase:
        return EnrolmentBase(
            self.features[mask],
            self.products[mask],
            self.groups[mask],
            self.synthetic[mask],
            self.photos[mask],
            self.sha256[mask],
        )


def new_photo_columns(
    features: np.ndarray, product: str, photos: Sequence[str], sha256: Sequence[str], first_group: int
) -> dict[str, np.ndarray]:
    """New real photos of `product` as stored columns (features float16), each its own group from `first_group`."""
    count = len(features)
    return {
        "features": np.asarray(features).astype(np.float16),
        "products": np.full(count, product).astype(str),
        "groups": np.arange(first_group, first_group + count, dtype=np.int64),
        "synthetic": np.zeros(count, dtype=bool),
        "photos": np.asarray(photos, dtype=str),
        "sha256": np.asarray(sha256, dtype=str),
    }


def capped_rows(
    products: np.ndarray, groups: np.ndarray, per_product: int, seed: int = 0, keep: np.ndarray | None = None
) -> np.ndarray:
    """A mask of at most `per_product` photos (groups, with their copies) of each product: a seeded random sample,
    always holding the groups in `keep` while they fit. One pass over each product's own rows (a comparison of
    every row per product was 500 million at 10,000 products); the products and groups alone, so an enrolment caps
    its stored rows without reading their features as float32."""
    kept_groups = np.zeros(0, dtype=np.int64) if keep is None else np.asarray(keep, dtype=np.int64)
    names, inverse = np.unique(products, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    mask = np.ones(len(products), dtype=bool)
    for index, rows in enumerate(np.split(order, np.searchsorted(inverse[order], np.arange(1, len(names))))):
        photos = np.unique(groups[rows])
        if len(photos) <= per_product:
            continue
        wanted = photos[np.isin(photos, kept_groups)][-per_product:]
        rest = photos[~np.isin(photos, wanted)]
        rng = np.random.default_rng(seed + index)
        picked = rng.choice(rest, size=per_product - len(wanted), replace=False)
        mask[rows[~np.isin(groups[rows], np.concatenate([picked, wanted]))]] = False
    return mask


@dataclass(frozen=True)
class Choices:
    """What the last full training chose, so an enrolment refits without searching."""

    structure: str
    classifiers: Mapping[str | None, tuple[Candidate, float]]
    target_precision: float = 0.9
    refuse_unseen: float | None = None
    product_threshold: float | None = None  # given to training (None: calibrated)
    category_threshold: float | None = None
    gallery_per_product: int = DEFAULT_MAX_PER_PRODUCT
    base_per_product: int = DEFAULT_BASE_PER_PRODUCT
    tuning_photos: int | None = 3000
    seed: int = 0
    trained_version: str = ""  # the full training these choices come from
    # How `structure` was chosen: by cross-validation at this many products (a consolidation keeps it while the
    # catalog stays near that size: models.train.consolidation.structure_to_fit), 0 when the operator named it
    # (kept for good), None when not recorded (written before: a consolidation chooses again)
    structure_for: int | None = None
    # A consolidation chose another structure than `structure` (the head's own, which quick rounds keep) by
    # cross-validation at this many products: kept while the catalog stays near that size, as `structure_for` is
    head_structure_for: int | None = None
    # Why refits keep the novelty score this training calibrated instead of calibrating it again on the version's
    # rows ("": they calibrate it again): a tuned backbone's score was calibrated on its tuning folds' networks,
    # each of which never learned the products it hid; the shipped network learned them all
    novelty_kept: str = ""
    # What the operator named for the training's classifier search (`partsight train --classifiers`,
    # `--preprocessing`: the kinds, the preprocessing, None for each not named), which a consolidation's search
    # keeps to (models.train.consolidation.search_of); None when not recorded (written before)
    search_named: tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None = None

    def record(self) -> dict[str, Any]:
        return {
            "structure": self.structure,
            "classifiers": [
                {
                    "scope": scope,
                    "kind": candidate.kind,
                    "parameter": candidate.parameter,
                    "preprocessing": candidate.preprocessing,
                    "temperature": temperature,
                }
                for scope, (candidate, temperature) in sorted(
                    self.classifiers.items(), key=lambda item: "" if item[0] is None else f"~{item[0]}"
                )
            ],
            "target_precision": self.target_precision,
            "refuse_unseen": self.refuse_unseen,
            "product_threshold": self.product_threshold,
            "category_threshold": self.category_threshold,
            "gallery_per_product": self.gallery_per_product,
            "base_per_product": self.base_per_product,
            "tuning_photos": self.tuning_photos,
            "seed": self.seed,
            "trained_version": self.trained_version,
            "structure_for": self.structure_for,
            "head_structure_for": self.head_structure_for,
            "novelty_kept": self.novelty_kept,
            "search_named": None
            if self.search_named is None
            else {
                "classifiers": _listed(self.search_named[0]),
                "preprocessing": _listed(self.search_named[1]),
            },
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Choices:
        """The choices a manifest records; InvalidModel when the record is not one."""
        try:
            return cls._from_record(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a key missing, a value of the wrong kind
            raise InvalidModel(f"the manifest's choices ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _from_record(cls, record: Mapping[str, Any]) -> Choices:
        classifiers = {
            entry["scope"]: (
                Candidate(str(entry["kind"]), float(entry["parameter"]), str(entry["preprocessing"])),
                float(entry["temperature"]),
            )
            for entry in record["classifiers"]
        }

        def optional(name: str) -> float | None:
            value = record.get(name)
            return None if value is None else float(value)

        return cls(
            structure=str(record["structure"]),
            classifiers=classifiers,
            target_precision=float(record["target_precision"]),
            refuse_unseen=optional("refuse_unseen"),
            product_threshold=optional("product_threshold"),
            category_threshold=optional("category_threshold"),
            gallery_per_product=int(record["gallery_per_product"]),
            base_per_product=int(record["base_per_product"]),
            tuning_photos=None if record.get("tuning_photos") is None else int(record["tuning_photos"]),
            seed=int(record["seed"]),
            trained_version=str(record.get("trained_version", "")),
            structure_for=None if record.get("structure_for") is None else int(record["structure_for"]),
            head_structure_for=None if record.get("head_structure_for") is None else int(record["head_structure_for"]),
            novelty_kept=str(record.get("novelty_kept", "")),
            search_named=_search_named(record.get("search_named")),
        )


def _listed(names: tuple[str, ...] | None) -> list[str] | None:
    return None if names is None else list(names)


def _search_named(record: Mapping[str, Any] | None) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None:
    """Choices.search_named from its record (None: not recorded)."""
    if record is None:
        return None

    def names(key: str) -> tuple[str, ...] | None:
        value = record[key]
        if value is None:
            return None
        if not isinstance(value, list):
            raise TypeError(f"search_named.{key} is not a list")
        return tuple(str(name) for name in value)

    return names("classifiers"), names("preprocessing")


def base_record(rows: StoredRows, layout: RowLayout) -> dict[str, Any]:
    """The manifest's `enrolment_base`: how many rows and real photos are in use, and where they are stored."""
    synthetic = np.asarray(rows.columns["synthetic"], dtype=bool)[rows.in_use]
    return {"rows": len(synthetic), "photos": int((~synthetic).sum()), **layout.record()}


def stored_base(base: EnrolmentBase) -> StoredRows:
    """A base not stored yet (a training's): all its rows in use, no shards to build on."""
    return StoredRows(base.columns(), np.ones(len(base.features), dtype=bool))


def read_stored_base(record: Mapping[str, Any], path_of: Callable[[str], Path]) -> StoredRows:
    """The rows a version's `enrolment_base` record names: its shards and mask, or its one file (written before
    shards). `path_of(name)`: a verified file of the version (ArtifactError otherwise); InvalidModel for a record
    or rows that are malformed."""
    if "file" in record:
        columns = read_arrays(path_of(str(record["file"])), COLUMNS)
        return StoredRows(columns, np.ones(len(columns["features"]), dtype=bool))
    return read_rows(RowLayout.from_record(record), path_of, COLUMNS)
