"""The gallery's nearest photos at catalog scale: an HNSW graph (hnswlib) over a large gallery's rows, so that a
frame's nearest photos cost a fraction of a millisecond at 100,000 photos where the exact scan costs tens
(bench/gallery_index.py chose hnswlib; bench/answer_path.py measures the whole answer path with it).

The graph holds each row projected on the gallery's first principal components; a frame's candidates found there
are ranked by their exact similarity in the full features, so a match's similarity is the exact scan's.

Each row is known to the graph by a key that does not depend on where it is stored: 63 bits of the sha256 of its
photo's sha256 and its product. So a graph built for one version serves the versions that grow from it: rows an
enrolment added since are not in it (they are candidates of every frame, ranked exactly with the rest), and rows
no longer in use are marked deleted in memory when it loads. A training writes a new graph; a consolidation adds
the rows that arrived since (`extended`), with no rebuild. A version stores the graph and its projection as
content-named files, hashed in its manifest and verified before they are read like every other file; versions
that share a graph share its bytes (models.store.blobs).

Below INDEX_MIN_PHOTOS the exact scan is about as fast, and exact: no graph is written.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.arrays import read_arrays
from models.answer.dot import dot_rows
from models.answer.gallery import top_rows
from models.answer.row_shards import write_shard
from models.errors import ArtifactError, InvalidModel

logger = logging.getLogger(__name__)

INDEX_PREFIX = "gallery-index"
INDEX_MIN_PHOTOS = 2_000
# the graph's parameters, as measured by bench/answer_path.py at 100,000 photos of 1904-d features: the graph holds
# each row projected on its gallery's first PROJECTED_DIM principal components (a search there costs a seventh
# of one in the features' own 1904 dimensions, and a build a ninth); its CANDIDATES nearest are then ranked by
# their exact similarity: recall of the exact three nearest 0.996, the whole answer path 0.71 ms a frame on one core
PROJECTED_DIM = 128
CANDIDATES = 64
CONNECTIONS = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 96
PCA_SAMPLE = 8_000
REBUILD_UNUSED_SHARE = 0.2  # a graph whose rows out of use pass this share is built anew, not extended
KEYS_REMEMBERED = 2**17  # rows' keys a process keeps (360 bytes each: at most 47 MB), a gallery of 100,000 photos
_HEADER = struct.Struct("<6Q")  # hnswlib's file: offsetLevel0, max_elements, count, size_per_element, label, data


def row_keys(sha256: Sequence[str] | np.ndarray, products: Sequence[str] | np.ndarray) -> np.ndarray:
    """(N,) uint64: each row's key in a graph, from its photo's sha256 and its product (the same photo enrolled as
    two products is two rows). Keys are remembered for tables of up to KEYS_REMEMBERED rows: each version a process
    loads has every row of the one before it (at 20,000 rows 7 ms instead of 25 ms of hashing again)."""
    digests, names = np.asarray(sha256).tolist(), np.asarray(products).tolist()
    if len(digests) != len(names):
        raise ValueError(f"{len(digests)} photos' sha256 and {len(names)} products")
    # past what is remembered, rows hashed in order would each push out the key the next version needs first
    key_of = _row_key if len(digests) <= KEYS_REMEMBERED else _row_key.__wrapped__
    return np.fromiter(map(key_of, digests, names), dtype=np.uint64, count=len(digests))


@functools.lru_cache(maxsize=KEYS_REMEMBERED)
def _row_key(digest: str, product: str) -> int:
    hashed = hashlib.sha256(f"{digest}\0{product}".encode()).digest()
    return int.from_bytes(hashed[:8], "big") >> 1


@dataclass
class PhotoIndex:
    """A graph over gallery rows projected on `components` (around `mean`); `keys` are the rows it holds (each
    once), `deleted` those of them marked deleted in memory (a graph file never carries marks: only graphs built
    or extended for the purpose are saved)."""

    graph: Any  # hnswlib.Index
    keys: np.ndarray  # (M,) uint64, sorted, unique
    mean: np.ndarray  # (D,) float32
    components: np.ndarray  # (k, D) float32
    deleted: set[int] = field(default_factory=set)

    @property
    def size(self) -> int:
        return len(self.keys)

    def projected(self, features: np.ndarray) -> np.ndarray:
        return dot_rows(np.asarray(features, dtype=np.float32) - self.mean, self.components)

    def holds(self, keys: np.ndarray) -> np.ndarray:
        """(N,) bool: which of `keys` the graph holds."""
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found: np.ndarray = self.keys[at] == keys
        return found

    def marks_kept(self, used_keys: np.ndarray) -> bool:
        """Whether mark_unused(used_keys) would change no mark (a search over those rows may share the graph with
        the search that marked it)."""
        return self._unused(used_keys) == self.deleted

    def mark_unused(self, used_keys: np.ndarray) -> int:
        """Mark deleted (in memory) every row of the graph not among `used_keys`, and undelete those among them
        marked before; returns how many are deleted."""
        unused = self._unused(used_keys)
        for key in unused - self.deleted:
            self.graph.mark_deleted(key)
        for key in self.deleted - unused:
            self.graph.unmark_deleted(key)
        self.deleted = unused
        return len(unused)

    def _unused(self, used_keys: np.ndarray) -> set[int]:
        """The keys of the graph's rows not among `used_keys`."""
        return set(np.setdiff1d(self.keys, used_keys).tolist())

    def candidates(self, queries: np.ndarray) -> np.ndarray:
        """(Q, k) the keys of each query's CANDIDATES nearest rows in the projection (fewer when the graph holds
        fewer rows not deleted). RuntimeError from hnswlib when the graph cannot return that many."""
        wanted = min(CANDIDATES, self.size - len(self.deleted))
        if wanted <= 0:
            return np.zeros((len(queries), 0), dtype=np.uint64)
        keys, _ = self.graph.knn_query(self.projected(queries), k=wanted)
        result: np.ndarray = keys.astype(np.uint64)
        return result

    def save(self, staging: Path) -> dict[str, str]:
        """Write the graph and its projection into `staging` as files named by their content; returns the
        manifest's record of them."""
        if self.deleted:
            raise ValueError("a graph with rows marked deleted is a search's, not one to store")  # a bug
        scratch = staging / f".{INDEX_PREFIX}.writing"
        self.graph.save_index(str(scratch))
        graph = _content_named(scratch, staging, ".hnsw")
        projection = write_shard(staging, INDEX_PREFIX, {"mean": self.mean, "components": self.components})
        return {"graph": graph, "projection": projection}


def _content_named(scratch: Path, staging: Path, suffix: str) -> str:
    digest = hashlib.sha256()
    with scratch.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    name = f"{INDEX_PREFIX}-{digest.hexdigest()[:16]}{suffix}"
    os.replace(scratch, staging / name)
    return name


def available() -> bool:
    """Whether hnswlib is installed (a dependency; a worker installed without it scans every gallery exactly)."""
    return importlib.util.find_spec("hnswlib") is not None


def _hnswlib() -> Any:
    """The hnswlib module; InvalidModel naming the package when it is not installed."""
    try:
        import hnswlib  # noqa: PLC0415  # only galleries past INDEX_MIN_PHOTOS need it
    except ImportError as exc:
        raise InvalidModel("a photo index needs hnswlib, which is not installed (pip install hnswlib)") from exc
    return hnswlib


def principal_components(features: np.ndarray, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The mean and first `dim` principal components of a seeded sample of PCA_SAMPLE rows."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) > PCA_SAMPLE:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), PCA_SAMPLE, replace=False))]
    mean = x.mean(axis=0)
    centred = (x - mean).astype(np.float64)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, : min(dim, x.shape[1])].T
    return mean.astype(np.float32), np.ascontiguousarray(components, dtype=np.float32)


def _unique(features: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each key once, with the features of its first row (a photo enrolled twice as one product is one row)."""
    unique, first = np.unique(np.asarray(keys, dtype=np.uint64), return_index=True)
    return np.asarray(features, dtype=np.float32)[first], unique


def build_index(features: np.ndarray, keys: np.ndarray, *, threads: int = 1) -> PhotoIndex:
    """A new graph over `features` (L2-normalised rows) known by `keys`."""
    features, keys = _unique(features, keys)
    mean, components = principal_components(features, PROJECTED_DIM)
    graph = _hnswlib().Index(space="l2", dim=len(components))
    graph.init_index(max_elements=max(1, len(features)), M=CONNECTIONS, ef_construction=EF_CONSTRUCTION)
    index = PhotoIndex(graph, keys, mean, components)
    if len(features):
        graph.set_num_threads(threads)
        graph.add_items(index.projected(features), keys)
    graph.set_ef(EF_SEARCH)
    graph.set_num_threads(1)  # a frame's search runs on its lane's one core
    return index


def extended(index: PhotoIndex, features: np.ndarray, keys: np.ndarray, *, threads: int = 1) -> PhotoIndex:
    """The graph with the rows it does not hold yet added, in the same projection (no rebuild). Changes `index`'s
    graph: call it on a graph loaded or built for the purpose, not on one a gallery searches."""
    if index.deleted:
        raise ValueError("a graph a search marked is not extended")  # a bug: callers load a fresh one
    features, keys = _unique(features, keys)
    new = ~index.holds(keys)
    if not new.any():
        return index
    graph = index.graph
    graph.resize_index(index.size + int(new.sum()))
    graph.set_num_threads(threads)
    graph.add_items(index.projected(features[new]), keys[new])
    graph.set_num_threads(1)
    return PhotoIndex(graph, np.sort(np.concatenate([index.keys, keys[new]])), index.mean, index.components)


def load_index(graph_path: Path, projection_path: Path, dim: int) -> PhotoIndex:
    """The graph and projection in these (verified) files; ArtifactError when they are not a graph and a
    projection of `dim`-d features that fit each other."""
    projection = read_arrays(projection_path, ("mean", "components"))
    mean, components = projection["mean"], projection["components"]
    if (
        mean.shape != (dim,)
        or mean.dtype != np.float32
        or components.dtype != np.float32
        or components.ndim != 2
        or not 1 <= components.shape[0] <= dim
        or components.shape[1] != dim
    ):
        raise ArtifactError(f"malformed model files: {projection_path} is not a projection of {dim}-d features")
    projected_dim = int(components.shape[0])
    try:
        with graph_path.open("rb") as handle:
            header = _HEADER.unpack(handle.read(_HEADER.size))
    except (OSError, struct.error) as exc:
        raise ArtifactError(f"malformed model files: {graph_path} is not a photo index ({exc})") from exc
    if header[4] - header[5] != 4 * projected_dim:  # each row's data: projected_dim float32s
        raise ArtifactError(f"malformed model files: {graph_path} is not a graph of {projected_dim}-d rows")
    graph = _hnswlib().Index(space="l2", dim=projected_dim)
    try:
        graph.load_index(str(graph_path))
    except (RuntimeError, OSError, ValueError) as exc:
        raise ArtifactError(f"malformed model files: {graph_path} is not a photo index ({exc})") from exc
    graph.set_ef(EF_SEARCH)
    graph.set_num_threads(1)
    keys = np.unique(np.asarray(graph.get_ids_list(), dtype=np.uint64))
    return PhotoIndex(graph, keys, mean, components)


class GraphSearch:
    """A gallery's nearest photos through its graph: the graph's candidates in use and the rows it does not hold
    (photos enrolled since it was built, a second row of the same key), ranked by their exact similarity.
    Gallery.nearest's contract, in gallery rows. Safe to share between threads once built (searches only read)."""

    def __init__(self, index: PhotoIndex, keys: np.ndarray, features: np.ndarray) -> None:
        """`keys` (N,) and `features` (N, D): the gallery's rows in its order. Marks every graph row not among them
        deleted: the index is this search's own from here on, or shared with searches whose marks are the same
        (PhotoIndex.marks_kept: models.answer.gallery_rows shares it only then, so no mark changes here)."""
        self.index = index
        self.features = features
        index.mark_unused(keys)
        unique, first = np.unique(keys, return_index=True)
        self._sorted_keys, self._row_of_key = unique, first
        in_graph = np.zeros(len(keys), dtype=bool)
        in_graph[first[index.holds(unique)]] = True
        self.loose = np.flatnonzero(~in_graph)  # rows the graph does not hold: candidates of every frame
        self._loose_features = np.ascontiguousarray(features[self.loose], dtype=np.float32)
        self._warned = False

    def nearest(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.loose) * 2 > len(self.features):  # mostly loose: the graph no longer pays
            return top_rows(dot_rows(queries, self.features), count)
        try:
            keys = self.index.candidates(queries)
        except RuntimeError as exc:  # hnswlib could not return as many (a graph thinned by deletions)
            if not self._warned:
                logger.warning("the photo index failed a search (%s): the gallery is scanned exactly", exc)
                self._warned = True
            return top_rows(dot_rows(queries, self.features), count)
        last = len(self._sorted_keys) - 1
        at = np.minimum(np.searchsorted(self._sorted_keys, keys), last)
        rows = np.where(self._sorted_keys[at] == keys, self._row_of_key[at], -1)
        similarities = np.einsum("qd,qkd->qk", queries, self.features[np.maximum(rows, 0)])
        similarities = np.where(rows >= 0, similarities, -np.inf)
        if len(self.loose):
            rows = np.hstack([rows, np.broadcast_to(self.loose, (len(queries), len(self.loose)))])
            similarities = np.hstack([similarities, dot_rows(queries, self._loose_features)])
        columns, values = top_rows(similarities, count)
        picked = np.take_along_axis(rows, np.maximum(columns, 0), axis=1)
        return np.where(columns >= 0, picked, -1), values
