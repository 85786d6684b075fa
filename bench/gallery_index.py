"""Which gallery index: exact search in numpy against usearch, faiss and hnswlib, on one core.

    .venv/bin/python -m bench.gallery_index [--sizes 10000,100000] [--dim 1904] [--queries 500]

The gallery is what a version holds: L2-normalised feature vectors, `--per-product` photos of each product, the
products in families of look-alikes (a family's products close to each other, each product's photos close to its
own centre), the geometry of the drawn parts' features. The queries are frames: new photos of gallery products.
For each method: the seconds to build the index, its bytes, the milliseconds a frame's search takes on one core
(one frame a call, and a worker's batch of 4), and recall@3: the share of the exact three nearest photos it finds.
The exact search is the baseline, measured in the same run. Prints one table per size.

What the answer path needs from the gallery besides the nearest photos (the best similarity to the answered
product, for the novelty score) is a scan of that product's own photos (at most --gallery-per-product, 500),
which costs the same at any gallery size; the table's "exact" row is the whole gallery's scan today.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

K = 3


@dataclass
class Row:
    method: str
    build_s: float
    index_bytes: int
    ms_per_frame: float
    ms_per_frame_batch4: float
    recall: float


def gallery(size: int, dim: int, per_product: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`size` photos of size/per_product products in families of 12 look-alikes, and 1 query's worth of centres."""
    rng = np.random.default_rng(seed)
    products = max(1, size // per_product)
    families = max(1, products // 12)
    family_centres = rng.normal(size=(families, dim)).astype(np.float32)
    centres = family_centres[np.arange(products) % families] + 0.6 * rng.normal(size=(products, dim)).astype(np.float32)
    labels = np.repeat(np.arange(products), per_product)[:size]
    photos = centres[labels] + 0.9 * rng.normal(size=(len(labels), dim)).astype(np.float32)
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    return photos, centres


def frames(centres: np.ndarray, count: int, dim: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(centres), count)
    queries = centres[picks] + 0.9 * rng.normal(size=(count, dim)).astype(np.float32)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def exact_top(photos: np.ndarray, queries: np.ndarray) -> np.ndarray:
    similarities = queries @ photos.T
    top = np.argpartition(-similarities, K - 1, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(similarities, top, axis=1), axis=1), axis=1)


def timed_search(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Each query alone, then in batches of 4: the found ids and the ms per frame of each."""
    found = []
    started = time.perf_counter()
    for query in queries:
        found.append(search(query[None, :])[0])
    single = (time.perf_counter() - started) * 1000 / len(queries)
    started = time.perf_counter()
    for start in range(0, len(queries), 4):
        search(queries[start : start + 4])
    batch = (time.perf_counter() - started) * 1000 / len(queries)
    return np.array(found), single, batch


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def exact_numpy(photos: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    stored = photos.astype(np.float16).astype(np.float32)  # as a version keeps it (float16 on disk)
    return (lambda q: exact_top(stored, q)), stored.nbytes


def faiss_flat(photos: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    import faiss

    index = faiss.IndexFlatIP(photos.shape[1])
    index.add(photos)
    return (lambda q: index.search(q, K)[1]), photos.nbytes


def faiss_hnsw(photos: np.ndarray, m: int = 32, ef: int = 64) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    import faiss

    index = faiss.IndexHNSWFlat(photos.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(photos)
    index.hnsw.efSearch = ef
    return (lambda q: index.search(q, K)[1]), len(faiss.serialize_index(index))


def hnsw(photos: np.ndarray, m: int = 16, ef: int = 64) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=photos.shape[1])
    index.init_index(max_elements=len(photos), M=m, ef_construction=100)
    index.set_num_threads(1)
    index.add_items(photos, np.arange(len(photos)))
    index.set_ef(ef)
    return (lambda q: index.knn_query(q, k=K)[0]), index.index_file_size()


def usearch_index(photos: np.ndarray, dtype: str = "f16") -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    from usearch.index import Index

    index = Index(
        ndim=photos.shape[1], metric="ip", dtype=dtype, connectivity=16, expansion_add=100, expansion_search=64
    )
    index.add(np.arange(len(photos)), photos, threads=1)
    return (lambda q: np.atleast_2d(index.search(q, K, threads=1).keys)), index.memory_usage


METHODS: dict[str, Callable[..., tuple[Callable[[np.ndarray], np.ndarray], int]]] = {
    "exact, numpy (today)": exact_numpy,
    "exact, faiss IndexFlatIP": faiss_flat,
    "hnswlib M16 ef64": hnsw,
    "hnswlib M16 ef128": lambda p: hnsw(p, 16, 128),
    "faiss HNSW32 ef64": faiss_hnsw,
    "usearch f16 M16 ef64": usearch_index,
    "usearch i8 M16 ef64": lambda p: usearch_index(p, "i8"),
}


def one_core() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


def measure(size: int, args: argparse.Namespace) -> list[Row]:
    photos, centres = gallery(size, args.dim, args.per_product)
    queries = frames(centres, args.queries, args.dim)
    truth = exact_top(photos, queries)
    rows = []
    for name, build in METHODS.items():
        try:
            started = time.perf_counter()
            search, size_bytes = build(photos)
            build_s = time.perf_counter() - started
        except ImportError as exc:
            print(f"{name}: not installed ({exc})")
            continue
        found, single, batch = timed_search(search, queries)
        rows.append(Row(name, build_s, int(size_bytes), single, batch, recall(found, truth)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dim", type=int, default=1904, help="feature size (the parts models' recipe: 1904)")
    parser.add_argument("--per-product", type=int, default=20)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    one_core()
    for size in (int(s) for s in args.sizes.split(",")):
        rows = measure(size, args)
        base = next(row for row in rows if row.method.startswith("exact, numpy"))
        print(f"\n{size:,} gallery photos, {args.dim}-d, one core, {args.queries} frames")
        print("| method | build s | index MB | ms/frame (1 a call) | ms/frame (4 a call) | vs exact | recall@3 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            print(
                f"| {row.method} | {row.build_s:.1f} | {row.index_bytes / 1e6:.0f} | {row.ms_per_frame:.3f} "
                f"| {row.ms_per_frame_batch4:.3f} | {base.ms_per_frame_batch4 / row.ms_per_frame_batch4:.1f}x "
                f"| {row.recall:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
