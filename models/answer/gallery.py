"""The reference gallery: the feature vectors of a version's enrolled photos (never the photos), with their ids.

Each row is one enrolled photo: its product, its id (its path under `images/`) and its sha256. A result
names the nearest rows (`matches`), and the novelty score uses how close a frame comes to the photos of the
product it is answered as, relative to how close that product's own photos come to each other (`spread`).

Brute force in numpy: similarities are one matrix product of L2-normalised vectors (cosine). A gallery is
kept to at most `max_per_product` photos of each product (a seeded random sample, which keeps the
product's density), so its cost per frame stays a small share of the backbone's (measured in the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.answer.arrays import read_arrays, save_arrays
from models.answer.density import ProductDensity, fit_density
from models.answer.dot import dot_rows
from models.answer.sampling import sample_rows
from models.errors import InvalidModel

GALLERY_FILE = "gallery.npz"
DEFAULT_MAX_PER_PRODUCT = 500


class NearestPhotos(Protocol):
    def nearest(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """As Gallery.nearest without masks: (rows, similarities), best first."""
        ...


@dataclass(frozen=True)
class Gallery:
    features: np.ndarray  # (N, D) float32, L2-normalised, rows grouped by product in `products` order
    products: tuple[str, ...]  # the head's products
    labels: np.ndarray  # (N,) int index into `products`, non-decreasing
    photos: np.ndarray  # (N,) str: path under images/
    sha256: np.ndarray  # (N,) str
    spread_mean: np.ndarray  # (P,) mean similarity of a product's photo to its nearest other photo of it
    spread_std: np.ndarray  # (P,)
    # the photo index over the rows (models.answer.photo_index), for a gallery past INDEX_MIN_PHOTOS; None: scan
    search: NearestPhotos | None = field(default=None, compare=False, repr=False)
    # the density once fitted (`density`): this gallery's own (functools.cached_property would lock every gallery of
    # the process while one fits); a gallery `replace`d from this one refits its own
    _density: dict[str, ProductDensity | None] = field(default_factory=dict, compare=False, repr=False, init=False)

    def __post_init__(self) -> None:
        """InvalidModel when the rows do not fit together (a gallery file that is not one)."""
        n = len(self.features)
        if self.features.ndim != 2 or not (len(self.labels) == len(self.photos) == len(self.sha256) == n):
            raise InvalidModel("a gallery's features, labels, photos and sha256 must have one row per photo")
        if n and (np.any(np.diff(self.labels) < 0) or self.labels.min() < 0 or self.labels.max() >= len(self.products)):
            raise InvalidModel("a gallery's rows must be grouped by product, in the head's order")
        if set(np.unique(self.labels).tolist()) != set(range(len(self.products))):
            raise InvalidModel("a gallery needs at least one photo of every product")
        if self.spread_mean.shape != (len(self.products),) or self.spread_std.shape != (len(self.products),):
            raise InvalidModel("a gallery needs the spread of every product")

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def density(self) -> ProductDensity | None:
        """Its rows' density (models.answer.density), fitted from them on first use; None when they are too few. Two
        threads that ask first may both fit it: the same arrays, and either is kept."""
        if "fitted" not in self._density:
            self._density["fitted"] = fit_density(self.features, self.labels, len(self.products))
        return self._density["fitted"]

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(Q, N) cosine similarities of L2-normalised queries to every gallery photo."""
        return dot_rows(np.asarray(queries, dtype=np.float32), self.features)

    def best_by_product(self, similarities: np.ndarray) -> np.ndarray:
        """(Q, P) the highest similarity to any photo of each product."""
        starts = np.searchsorted(self.labels, np.arange(len(self.products)))
        best: np.ndarray = np.maximum.reduceat(similarities, starts, axis=1)
        return best

    def matches(self, similarities: np.ndarray, count: int) -> list[tuple[dict[str, Any], ...]]:
        """The `count` nearest photos of each query, best first."""
        return self.matches_of(*top_rows(similarities, count))

    def nearest(
        self, queries: np.ndarray, count: int, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's `count` nearest photos: (rows (Q, k), similarities (Q, k)), best first, k = min(count,
        photos); a row of -1 (similarity -inf) where a query has fewer. `masks` (Q, products): only photos of the
        products each query's mask allows (its line's), found by an exact scan of theirs; a query whose mask allows
        every product, and every query without masks, through the photo index when the gallery has one
        (models.answer.photo_index), else the exact scan."""
        x = np.asarray(queries, dtype=np.float32)
        width = min(max(count, 0), len(self.features))
        if masks is None:
            return self._nearest_of_all(x, count)
        rows = np.full((len(x), width), -1, dtype=np.int64)
        values = np.full((len(x), width), -np.inf, dtype=np.float32)
        whole = np.asarray(masks, dtype=bool).all(axis=1)
        if whole.any():
            found, similar = self._nearest_of_all(x[whole], count)
            rows[whole, : found.shape[1]], values[whole, : found.shape[1]] = found, similar
        for i in np.flatnonzero(~whole).tolist():
            found, similar = self._nearest_among(x[i : i + 1], count, np.asarray(masks[i], dtype=bool))
            rows[i, : found.shape[1]], values[i, : found.shape[1]] = found[0], similar[0]
        return rows, values

    def _nearest_of_all(self, x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self.search is not None:
            return self.search.nearest(x, count)
        return top_rows(self.similarities(x), count)

    def _nearest_among(self, x: np.ndarray, count: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The nearest photos of the `allowed` products alone: a scan of their rows (each product's are one slice)."""
        products = np.flatnonzero(allowed)
        starts = np.searchsorted(self.labels, products, side="left")
        ends = np.searchsorted(self.labels, products, side="right")
        if int((ends - starts).sum()) * 2 > len(self.labels):  # most of the gallery: one product, then masked
            similarities = np.where(allowed[self.labels], self.similarities(x), -np.inf).astype(np.float32)
            return top_rows(similarities, count)
        columns = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)] or [np.zeros(0, int)])
        found, values = top_rows(dot_rows(x, self.features[columns]), count)
        return np.where(found >= 0, columns[np.maximum(found, 0)], -1), values

    def best_of(self, queries: np.ndarray, products: np.ndarray) -> np.ndarray:
        """(Q,) each query's highest similarity to a photo of its product in `products` (indices into the head's
        products): a scan of that product's own photos, whatever the gallery's size."""
        x = np.asarray(queries, dtype=np.float32)
        starts = np.searchsorted(self.labels, products, side="left")
        ends = np.searchsorted(self.labels, products, side="right")
        return np.array(
            [float((self.features[s:e] @ q).max()) for q, s, e in zip(x, starts, ends, strict=True)],
            dtype=np.float32,
        )

    def matches_of(self, rows: np.ndarray, similarities: np.ndarray) -> list[tuple[dict[str, Any], ...]]:
        """The photos `rows` names (best first, as `nearest` gives them) as a result's matches."""
        return [
            tuple(
                {
                    "product": self.products[int(self.labels[i])],
                    "photo": str(self.photos[i]),
                    "similarity": round(float(value), 6),
                }
                for i, value in zip(picks.tolist(), values.tolist(), strict=True)
                if i >= 0 and np.isfinite(value)  # photos a line leaves out (-inf) are no match
            )
            for picks, values in zip(rows, similarities, strict=True)
        ]

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "features": self.features.astype(np.float16),
            "labels": self.labels.astype(np.int32),
            "photos": np.asarray(self.photos, dtype=str),
            "sha256": np.asarray(self.sha256, dtype=str),
            "spread_mean": self.spread_mean.astype(np.float32),
            "spread_std": self.spread_std.astype(np.float32),
        }

    def save(self, path: Path) -> None:
        save_arrays(path, self.arrays())

    @classmethod
    def load(cls, path: Path, products: Sequence[str]) -> Gallery:
        """ArtifactError naming the file when it is not an .npz of a gallery; InvalidModel when its rows do not fit
        together or the products."""
        stored = read_arrays(path, ("features", "labels", "photos", "sha256", "spread_mean", "spread_std"))
        try:
            numbers: dict[str, np.ndarray] = {
                "features": stored["features"].astype(np.float32),
                "labels": stored["labels"].astype(np.int64),
                "spread_mean": stored["spread_mean"].astype(np.float32),
                "spread_std": stored["spread_std"].astype(np.float32),
            }
        except (TypeError, ValueError) as exc:  # an array of text where numbers belong
            raise InvalidModel(f"{path}: {exc}") from exc
        return cls(
            features=numbers["features"],
            products=tuple(products),
            labels=numbers["labels"],
            photos=stored["photos"],
            sha256=stored["sha256"],
            spread_mean=numbers["spread_mean"],
            spread_std=numbers["spread_std"],
        )


def top_rows(similarities: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The `count` largest of each row of `similarities`: (columns, values), largest first (ties in column
    order); -1 and -inf where a row has fewer finite values."""
    queries, columns = similarities.shape
    count = min(max(count, 0), columns)
    if count == 0:
        return np.zeros((queries, 0), dtype=np.int64), np.zeros((queries, 0), dtype=np.float32)
    picks = np.argpartition(-similarities, count - 1, axis=1)[:, :count]
    values = np.take_along_axis(similarities, picks, axis=1)
    order = np.lexsort((picks, -values), axis=1)
    picks, values = np.take_along_axis(picks, order, axis=1), np.take_along_axis(values, order, axis=1)
    finite = np.isfinite(values)
    return np.where(finite, picks, -1), np.where(finite, values, -np.inf).astype(np.float32)


def product_spread(features: np.ndarray, labels: np.ndarray, products: int) -> tuple[np.ndarray, np.ndarray]:
    """Per product, the mean and standard deviation of each photo's similarity to its nearest other photo of
    the same product (a product with one photo gets mean 1, std 1: no spread is known)."""
    mean = np.ones(products, dtype=np.float32)
    std = np.ones(products, dtype=np.float32)
    for index in range(products):
        rows = features[labels == index]
        if len(rows) < 2:
            continue
        similar = rows @ rows.T
        np.fill_diagonal(similar, -np.inf)
        nearest = similar.max(axis=1)
        mean[index] = float(nearest.mean())
        std[index] = max(float(nearest.std()), 0.02)
    return mean, std


def build_gallery(
    features: np.ndarray,
    product_of_row: Sequence[str] | np.ndarray,
    photos: Sequence[str],
    sha256: Sequence[str],
    products: Sequence[str],
    *,
    max_per_product: int = DEFAULT_MAX_PER_PRODUCT,
    seed: int = 0,
) -> Gallery:
    """A gallery of real photos' features, at most `max_per_product` of each product, grouped by product."""
    x = np.asarray(features, dtype=np.float32)
    names = np.asarray(product_of_row)
    keep: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for index, product in enumerate(products):
        rows = np.flatnonzero(names == product)
        if len(rows) == 0:  # a bug: the caller's products come from these rows
            raise ValueError(f"no photo of {product!r} for the gallery")
        rows = rows[sample_rows(len(rows), max_per_product, seed + index)]
        keep.append(rows)
        labels.append(np.full(len(rows), index))
    order = np.concatenate(keep)
    label_array = np.concatenate(labels)
    kept = x[order].astype(np.float16).astype(np.float32)  # as it will be read back
    mean, std = product_spread(kept, label_array, len(products))
    return Gallery(
        features=kept,
        products=tuple(products),
        labels=label_array,
        photos=np.asarray([photos[i] for i in order], dtype=str),
        sha256=np.asarray([sha256[i] for i in order], dtype=str),
        spread_mean=mean,
        spread_std=std,
    )
