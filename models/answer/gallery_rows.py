"""The gallery as a version stores it: its photos' rows in content-named shards (models.answer.row_shards) and each
product's spread, which the caller stores (models.bundle: a keyed table of JSON shards), so an enrolment adds its own
photos' rows and its product's spread, and links the rest.

On disk a gallery's rows are in the order they were added (a training's photos, then each enrolment's), each row
naming its product; loading orders them by the head's products, as `Gallery` holds them. A version written before
shards keeps one gallery.npz (`file` in its record) and loads as it did.

A gallery of INDEX_MIN_PHOTOS photos or more also stores its photo index (models.answer.photo_index): `with_index`
builds it for a training and extends it for a consolidation; an enrolment carries it as it is (its photos are
ranked exactly beside the graph's candidates until the next consolidation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.answer import read_once
from models.answer.arrays import read_arrays
from models.answer.gallery import Gallery, product_spread
from models.answer.photo_index import (
    INDEX_MIN_PHOTOS,
    REBUILD_UNUSED_SHARE,
    GraphSearch,
    PhotoIndex,
    available,
    build_index,
    extended,
    load_index,
    row_keys,
)
from models.answer.read_once import identity
from models.answer.row_buffers import as_float32
from models.answer.row_shards import RowLayout, StoredRows, link_or_copy, read_rows, write_rows
from models.answer.sampling import sample_rows
from models.errors import InvalidModel

GALLERY_PREFIX = "gallery"
SPREAD_PREFIX = "gallery-spread"
COLUMNS = ("features", "products", "photos", "sha256")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredIndex:
    """A photo index a version stores: its graph's and its projection's file names (in GalleryRows.source)."""

    graph: str
    projection: str

    def record(self) -> dict[str, str]:
        return {"graph": self.graph, "projection": self.projection}

    @classmethod
    def from_record(cls, record: Any) -> StoredIndex:
        if not isinstance(record, Mapping) or not all(isinstance(record.get(k), str) for k in ("graph", "projection")):
            raise InvalidModel("the gallery's index record names no graph and projection files")
        if any("/" in record[k] for k in ("graph", "projection")):
            raise InvalidModel("the gallery's index record names a file outside the version")
        return cls(str(record["graph"]), str(record["projection"]))


@dataclass(frozen=True)
class GalleryRows:
    """Every stored gallery row and which are in use, each product's spread (mean, std), the version folder
    the layout's shards are in (None: nothing stored yet), and the photo index: as stored there, or built and not
    yet stored (None: none)."""

    rows: StoredRows
    spread: Mapping[str, tuple[float, float]]
    source: Path | None = None
    index: StoredIndex | PhotoIndex | None = None

    @property
    def photos(self) -> int:
        return int(self.rows.in_use.sum())

    def with_photos(  # noqa: PLR0917
        self,
        features: np.ndarray,
        product: str,
        photos: Sequence[str],
        sha256: Sequence[str],
        max_per_product: int,
        seed: int,
    ) -> GalleryRows:
        """These rows and new photos of `product`; at most `max_per_product` of its photos in use (a seeded sample)
        and its spread measured again. Every other product's rows and spread stay as they are."""
        added = {
            "features": np.asarray(features, dtype=np.float32).astype(np.float16),
            "products": np.full(len(features), product).astype(str),
            "photos": np.asarray(photos, dtype=str),
            "sha256": np.asarray(sha256, dtype=str),
        }
        grown = self.rows.grown(added)
        products = grown.columns["products"]
        mine = np.flatnonzero(products[grown.in_use] == product)  # the product's rows among those in use
        keep = np.ones(int(grown.in_use.sum()), dtype=bool)
        if len(mine) > max_per_product:
            keep[mine] = False
            keep[mine[sample_rows(len(mine), max_per_product, seed)]] = True
        grown = grown.keeping(keep)
        own = grown.used_where(products == product)["features"].astype(np.float32)  # its rows alone: not the rest
        mean, std = product_spread(own, np.zeros(len(own), dtype=np.int64), 1)
        spread = {**self.spread, product: (float(mean[0]), float(std[0]))}
        return replace(self, rows=grown, spread=spread)

    def with_index(self, *, threads: int = 1) -> GalleryRows:
        """These rows with a photo index when INDEX_MIN_PHOTOS or more are in use (none below): the one they have
        with the rows it lacks added, or a new one when there is none or more than REBUILD_UNUSED_SHARE of its rows
        are out of use."""
        if self.photos < INDEX_MIN_PHOTOS:
            return replace(self, index=None)
        if not available():
            logger.warning("hnswlib is not installed: a gallery of %d photos gets no photo index", self.photos)
            return self
        used = self.rows.used()
        features = used["features"].astype(np.float32)
        keys = row_keys(used["sha256"], used["products"])
        current: PhotoIndex | None = None
        if isinstance(self.index, StoredIndex) and self.source is not None:
            current = self._load_index(features.shape[1])
        elif isinstance(self.index, PhotoIndex):
            current = self.index
        if current is not None and current.size - len(np.intersect1d(current.keys, keys)) > (
            REBUILD_UNUSED_SHARE * current.size
        ):
            logger.info("the photo index has too many photos out of use: built anew")
            current = None
        if current is None:
            index = build_index(features, keys, threads=threads)
        elif current.holds(keys).all() and isinstance(self.index, StoredIndex):
            return self  # it holds every photo: kept as stored
        else:
            index = extended(current, features, keys, threads=threads)
        return replace(self, index=index)

    def _load_index(self, dim: int) -> PhotoIndex:
        if not isinstance(self.index, StoredIndex) or self.source is None:
            raise ValueError("no stored photo index")  # a bug: callers check
        return load_index(self.source / self.index.graph, self.source / self.index.projection, dim)

    def gallery(self, products: Sequence[str], *, searchable: bool = True) -> Gallery:
        """The rows in use as a Gallery over the head's `products` (rows ordered by product), searched through the
        photo index when there is one and `searchable` (False: the exact scan, without loading the graph).
        InvalidModel for a row of a product the head does not know, or a product without photo or spread."""
        used = self.rows.used()
        index = {product: i for i, product in enumerate(products)}
        names, inverse = np.unique(used["products"].astype(str), return_inverse=True)  # each name looked up once
        try:
            labels = np.array([index[str(name)] for name in names], dtype=np.int64)[inverse.reshape(-1)]
            mean = np.array([self.spread[p][0] for p in products], dtype=np.float32)
            std = np.array([self.spread[p][1] for p in products], dtype=np.float32)
        except KeyError as exc:
            raise InvalidModel(f"the gallery and the head's products do not match: {exc}") from exc
        # rows are stored by product, a new product's after the rest: mostly in order already, and not copied then
        # (their float32 copy made of the rows an earlier version of the same buffer did not have: row_buffers)
        in_order = bool(np.all(labels[1:] >= labels[:-1]))
        order = slice(None) if in_order else np.argsort(labels, kind="stable")
        try:
            features = as_float32(used["features"]) if in_order else used["features"][order].astype(np.float32)
        except (TypeError, ValueError) as exc:  # text where numbers belong
            raise InvalidModel(f"the gallery's features: {exc}") from exc
        gallery = Gallery(
            features=features,
            products=tuple(products),
            labels=labels[order],
            photos=used["photos"][order].astype(str),
            sha256=used["sha256"][order].astype(str),
            spread_mean=mean,
            spread_std=std,
        )
        if self.index is None or not searchable:
            return gallery
        if not available():
            logger.warning(
                "hnswlib is not installed: the gallery's %d photos are scanned exactly on every frame, not through its "
                "photo index (pip install hnswlib)",
                len(gallery.features),
            )
            return gallery
        keys = row_keys(gallery.sha256, used["products"][order])
        photo_index = self._graph_for(gallery.dim, keys) if isinstance(self.index, StoredIndex) else self.index
        return replace(gallery, search=GraphSearch(photo_index, keys, gallery.features))

    def _graph_for(self, dim: int, keys: np.ndarray) -> PhotoIndex:
        """The stored graph for a search over the rows `keys`: the one this scope (models.answer.read_once) loaded
        already from the same file, where that search leaves its marks as they are (an enrolment of a new product:
        the version it builds on searches the same graph, and nothing in it changes, so both share it; 15 ms at
        1,000 parts); otherwise loaded anew, its own."""
        if not isinstance(self.index, StoredIndex) or self.source is None:
            raise ValueError("no stored photo index")  # a bug: callers check
        memo = read_once.memo("graphs")
        files = (identity(self.source / self.index.graph), identity(self.source / self.index.projection))
        loaded: PhotoIndex | None = None if memo is None else memo.get(files)
        if loaded is not None and loaded.marks_kept(keys):
            return loaded
        loaded = self._load_index(dim)
        if memo is not None:
            memo[files] = loaded
        return loaded


def rows_of(gallery: Gallery) -> GalleryRows:
    """A gallery built in memory (a training's) as rows to store: all in use, no shards to build on."""
    columns = {
        "features": gallery.features.astype(np.float16),
        "products": np.asarray(gallery.products, dtype=str)[gallery.labels],
        "photos": np.asarray(gallery.photos, dtype=str),
        "sha256": np.asarray(gallery.sha256, dtype=str),
    }
    spread = {
        product: (float(gallery.spread_mean[i]), float(gallery.spread_std[i]))
        for i, product in enumerate(gallery.products)
    }
    return GalleryRows(StoredRows(columns, np.ones(len(gallery.features), dtype=bool)), spread)


def stored_spreads(gallery: GalleryRows) -> dict[str, list[float]]:
    """Each product's spread as a version stores it: float32 values, as galleries stored before tables kept them,
    so that a spread read back compares equal."""
    return {p: [float(np.float32(m)), float(np.float32(s))] for p, (m, s) in gallery.spread.items()}


def write_gallery(staging: Path, gallery: GalleryRows, spread: Any) -> dict[str, Any]:
    """Store the gallery's rows and index in `staging`; returns the manifest's `gallery` record, with `spread`: the
    record of its spreads (stored_spreads) as the caller stored them."""
    layout = write_rows(staging, GALLERY_PREFIX, gallery.rows, gallery.source)
    record: dict[str, Any] = {"photos": gallery.photos, **layout.record(), "spread": spread}
    if isinstance(gallery.index, PhotoIndex):
        record["index"] = gallery.index.save(staging)
    elif isinstance(gallery.index, StoredIndex) and gallery.source is not None:
        for name in (gallery.index.graph, gallery.index.projection):
            link_or_copy(gallery.source / name, staging / name)
        record["index"] = gallery.index.record()
    return record


def read_gallery(
    record: Mapping[str, Any],
    path_of: Callable[[str], Path],
    products: Sequence[str],
    source: Path,
    spreads: Mapping[str, Any] | None = None,
) -> GalleryRows:
    """The gallery a version's record names (`path_of(name)`: a verified file); a single gallery.npz written
    before shards too. `spreads`: each product's [mean, std] as the caller read them from the record's `spread`;
    None for a version that keeps them in one .npz. InvalidModel for a record or rows that are malformed."""
    if "file" in record:
        return rows_of(Gallery.load(path_of(str(record["file"])), products))
    spread = _spreads(record["spread"], path_of) if spreads is None else _pairs(spreads.items())
    rows = read_rows(RowLayout.from_record(record), path_of, COLUMNS)
    index = None
    if record.get("index") is not None:
        index = StoredIndex.from_record(record["index"])
        path_of(index.graph), path_of(index.projection)  # verified before any is read
    return GalleryRows(rows, spread, source, index)


def _spreads(name: Any, path_of: Callable[[str], Path]) -> dict[str, tuple[float, float]]:
    """Each product's spread from one .npz (a version written before the spreads were a table)."""
    spread = read_arrays(path_of(str(name)), ("products", "spread_mean", "spread_std"))
    try:
        pairs = zip(spread["spread_mean"].astype(float), spread["spread_std"].astype(float), strict=True)
    except (TypeError, ValueError) as exc:
        raise InvalidModel(f"the gallery's spread: {exc}") from exc
    return _pairs(zip(spread["products"].astype(str), pairs, strict=True))


def _pairs(items: Any) -> dict[str, tuple[float, float]]:
    try:
        return {str(p): (float(m), float(s)) for p, (m, s) in items}
    except (TypeError, ValueError) as exc:  # not a pair of numbers, or arrays of different lengths
        raise InvalidModel(f"the gallery's spread: {exc}") from exc
