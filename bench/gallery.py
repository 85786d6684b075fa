"""What the reference gallery costs per frame, and whether a vector index would pay.

    .venv/bin/python -m bench.gallery [--dims 1280,1904,3120] [--sizes 200,1000,5000] [--batch 32]

For each feature dimension D (default 1904, the shipped recipe "b10+b14+b15+head") and gallery size N, it
builds a real `models.answer.gallery.Gallery` of synthetic L2-normalised float32 vectors (N / 500 products, at
least 2, rows grouped by product, rounded through float16 as a stored gallery is read back) and times, on
one thread (numpy's BLAS pinned with threadpoolctl, as one worker lane has one core), exactly what
`models.answer.answerer` does with it per batch: `similarities` (one matrix product), `best_by_product`
(np.maximum.reduceat) and `matches(similarities, 3)`, at batch `--batch` and at batch 1. Each cell repeats
until it has run `--seconds` and at least 5 times (at most 3 x `--seconds` past its first run) and reports
the median batch's time divided by the batch size. RAM is what the gallery's arrays hold (float32
features, labels, photo ids and sha256s), disk what `Gallery.save` writes (float16 features, uncompressed).

If `usearch` or `hnswlib` is importable, it also builds an HNSW index of each gallery (inner product,
connectivity 16, expansion 100 when adding and 64 when searching; built on every core, as an index would
be built once per version) and reports its build time, milliseconds per query at k=3 on one thread, and
recall@3 against the brute force on 200 queries. The synthetic data are clustered (a centre per product, 8
views per product, noise per photo; a query is another photo of a random view), which is kinder to an index
than isotropic noise and harsher than real features' low intrinsic dimension: read recall as indicative.
An index answers `matches` and the nearest product only; the novelty score also needs the answered
product's nearest photo (`best_by_product` at the answered column), a brute force over that product's
at most 500 rows, timed and printed under each table as the least any index path adds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

if importlib.util.find_spec("threadpoolctl") is None:  # before numpy is imported: its BLAS reads these once
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = "1"
    PINNING = "threadpoolctl is not installed: OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1 set"
else:
    PINNING = "numpy's BLAS pinned to 1 thread with threadpoolctl"

import numpy as np

from bench.e2e import table
from models.answer.gallery import DEFAULT_MAX_PER_PRODUCT, Gallery

MATCHES = 3  # models.answer.answerer's default
RECALL_QUERIES = 200
VIEWS_PER_PRODUCT = 8
PRODUCT_WEIGHT, VIEW_WEIGHT, PHOTO_WEIGHT = 1.0, 0.7, 0.5
MIN_REPEATS = 5
MiB = 1024 * 1024


def one_thread() -> AbstractContextManager[Any]:
    if importlib.util.find_spec("threadpoolctl") is None:
        return nullcontext()  # the environment variables above did it
    from threadpoolctl import threadpool_limits

    limits: AbstractContextManager[Any] = threadpool_limits(limits=1)
    return limits


def blas_line() -> str:
    if importlib.util.find_spec("threadpoolctl") is None:
        return f"numpy {np.__version__}"
    from threadpoolctl import threadpool_info

    libraries = [f"{info['internal_api']} {info.get('version') or ''}".strip() for info in threadpool_info()]
    return f"numpy {np.__version__} ({', '.join(libraries) or 'no BLAS found'})"


def index_library() -> str | None:
    for name in ("usearch", "hnswlib"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


# ---------------------------------------------------------------- synthetic data


def unit_rows(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return result


@dataclass(frozen=True)
class Synthetic:
    gallery: Gallery
    views: np.ndarray  # (P * VIEWS_PER_PRODUCT, D) float32, unnormalised view centres (product centre included)

    def queries(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` new photos of random views of random products, L2-normalised float32."""
        dim = self.gallery.dim
        picks = rng.integers(0, len(self.views), size=count)
        noise = rng.standard_normal((count, dim), dtype=np.float32) * np.float32(PHOTO_WEIGHT / np.sqrt(dim))
        return unit_rows(self.views[picks] + noise)


def product_rows(photos: int, products: int) -> list[int]:
    base, extra = divmod(photos, products)
    return [base + (p < extra) for p in range(products)]


def synthetic_gallery(photos: int, dim: int, seed: int = 0) -> Synthetic:
    """A gallery of `photos` rows of `dim` features: N / 500 products (at least 2), grouped by product."""
    products = max(2, photos // DEFAULT_MAX_PER_PRODUCT)
    if photos < products:
        raise ValueError(f"a gallery of {photos} photos cannot hold {products} products")
    rng = np.random.default_rng(seed)
    features = np.empty((photos, dim), dtype=np.float32)
    labels = np.empty(photos, dtype=np.int64)
    views = np.empty((products * VIEWS_PER_PRODUCT, dim), dtype=np.float32)
    scale = np.float32(1 / np.sqrt(dim))
    start = 0
    for product, count in enumerate(product_rows(photos, products)):
        centre = rng.standard_normal(dim, dtype=np.float32) * scale * np.float32(PRODUCT_WEIGHT)
        mine = centre + rng.standard_normal((VIEWS_PER_PRODUCT, dim), dtype=np.float32) * scale * np.float32(
            VIEW_WEIGHT
        )
        views[product * VIEWS_PER_PRODUCT : (product + 1) * VIEWS_PER_PRODUCT] = mine
        rows = mine[rng.integers(0, VIEWS_PER_PRODUCT, size=count)]
        rows += rng.standard_normal((count, dim), dtype=np.float32) * scale * np.float32(PHOTO_WEIGHT)
        features[start : start + count] = unit_rows(rows).astype(np.float16).astype(np.float32)  # as read back
        labels[start : start + count] = product
        start += count
    gallery = Gallery(
        features=features,
        products=tuple(f"product-{p:05d}" for p in range(products)),
        labels=labels,
        photos=np.asarray([f"images/product-{labels[i]:05d}/{i:07d}.jpg" for i in range(photos)], dtype=str),
        sha256=np.asarray([f"{i:064x}" for i in range(photos)], dtype=str),
        spread_mean=np.ones(products, dtype=np.float32),
        spread_std=np.ones(products, dtype=np.float32),
    )
    return Synthetic(gallery=gallery, views=views)


def ram_bytes(gallery: Gallery) -> int:
    arrays = (gallery.features, gallery.labels, gallery.photos, gallery.sha256, gallery.spread_mean, gallery.spread_std)
    return sum(int(a.nbytes) for a in arrays)


def disk_bytes(gallery: Gallery) -> int:
    """What `Gallery.save` writes (np.savez, uncompressed), without making the float16 copy."""
    n, products = len(gallery.features), len(gallery.products)
    features = n * gallery.dim * np.dtype(np.float16).itemsize
    labels = n * np.dtype(np.int32).itemsize
    ids = int(np.asarray(gallery.photos, dtype=str).nbytes + np.asarray(gallery.sha256, dtype=str).nbytes)
    return features + labels + ids + 2 * products * np.dtype(np.float32).itemsize


# ---------------------------------------------------------------- timing


def timed(step: Callable[[], object], seconds: float) -> float:
    """The median seconds of one `step`, over at least MIN_REPEATS runs and `seconds` (at most 3 x `seconds`)."""
    step()  # warm: first-touch pages, BLAS buffers
    times: list[float] = []
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - began
        if (len(times) >= MIN_REPEATS and elapsed >= seconds) or elapsed >= 3 * seconds:
            return statistics.median(times)


def per_batch(gallery: Gallery, queries: np.ndarray) -> Callable[[], object]:
    """What models.answer.answerer asks of the gallery for one batch."""

    def step() -> object:
        similarities = gallery.similarities(queries)
        best = gallery.best_by_product(similarities)
        return best, gallery.matches(similarities, MATCHES)

    return step


def answered_product_step(gallery: Gallery, queries: np.ndarray, rng: np.random.Generator) -> Callable[[], object]:
    """An index path's remainder: each query's nearest photo of the product it is answered as."""
    starts = np.searchsorted(gallery.labels, np.arange(len(gallery.products) + 1))
    answered = rng.integers(0, len(gallery.products), size=len(queries))
    blocks = [gallery.features[starts[p] : starts[p + 1]] for p in answered]

    def step() -> object:
        return [float((block @ query).max()) for block, query in zip(blocks, queries, strict=True)]

    return step


def brute_top(gallery: Gallery, queries: np.ndarray, count: int) -> np.ndarray:
    similarities = gallery.similarities(queries)
    top: np.ndarray = np.argpartition(-similarities, count - 1, axis=1)[:, :count]
    return top


# ---------------------------------------------------------------- approximate index


CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 100, 64


@dataclass(frozen=True)
class IndexResult:
    build_s: float
    ms_per_query: float
    recall: float


def build_index(library: str, features: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray]:
    """An HNSW index of `features` (all cores), as a one-thread search: queries, k -> (Q, k) row indices."""
    n, dim = features.shape
    if library == "usearch":
        from usearch.index import Index

        index = Index(
            ndim=dim,
            metric="ip",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        index.add(np.arange(n, dtype=np.uint64), features, threads=0)

        def usearch_search(queries: np.ndarray, k: int) -> np.ndarray:
            found = index.search(queries, k, threads=1)
            return np.asarray(found.keys, dtype=np.int64).reshape(len(queries), k)

        return usearch_search
    import hnswlib

    graph = hnswlib.Index(space="ip", dim=dim)
    graph.init_index(max_elements=n, ef_construction=EXPANSION_ADD, M=CONNECTIVITY, random_seed=0)
    graph.add_items(features, np.arange(n), num_threads=os.cpu_count() or 1)
    graph.set_ef(max(EXPANSION_SEARCH, MATCHES))

    def hnswlib_search(queries: np.ndarray, k: int) -> np.ndarray:
        found, _ = graph.knn_query(queries, k=k, num_threads=1)
        return np.asarray(found, dtype=np.int64)

    return hnswlib_search


def time_index(library: str, data: Synthetic, seconds: float, rng: np.random.Generator) -> IndexResult:
    features = data.gallery.features
    t0 = time.perf_counter()
    search = build_index(library, features)
    build_s = time.perf_counter() - t0
    queries = data.queries(RECALL_QUERIES, rng)
    k = min(MATCHES, len(features))
    with one_thread():
        truth = brute_top(data.gallery, queries, k)
        found = search(queries, k)
        batch_s = timed(lambda: search(queries, k), seconds)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True))
    return IndexResult(build_s=build_s, ms_per_query=1000 * batch_s / len(queries), recall=hits / truth.size)


# ---------------------------------------------------------------- the report


def ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, comma-separated, not {text!r}")
    return values


def ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


@contextmanager
def stage(text: str) -> Iterator[None]:
    print(f"{text} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dims", type=ints, default=[1904], help="feature dimensions, comma-separated")
    parser.add_argument(
        "--sizes", type=ints, default=[200, 1000, 5000, 20000, 50000, 100000], help="gallery photos, comma-separated"
    )
    parser.add_argument("--batch", type=int, default=32, help="frames per batch (batch 1 is also reported)")
    parser.add_argument("--seconds", type=float, default=1.0, help="least time spent on each cell")
    parser.add_argument("--backbone-ms", type=float, default=19.4, help="the backbone's CPU-ms per frame")
    parser.add_argument("--no-index", action="store_true", help="skip the approximate index even if installed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.batch <= 0:
        parser.error("--batch must be positive")
    library = None if args.no_index else index_library()
    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    print(f"# Reference gallery per frame: brute force in numpy{f' vs an HNSW index ({library})' if library else ''}\n")
    print(f"{blas_line()}; {PINNING}; median of at least {MIN_REPEATS} runs and {args.seconds:g} s per cell.")
    if library is None and not args.no_index:
        print("No approximate index: `pip install usearch` (or `hnswlib`) into .venv to time one; skipped.")
    for dim in args.dims:
        rows: list[tuple[str, ...]] = []
        builds: list[str] = []
        remainder: list[str] = []
        id_bytes = 0
        for photos in args.sizes:
            with stage(f"D={dim} N={photos}: synthetic gallery"):
                data = synthetic_gallery(photos, dim, seed=args.seed + photos)
            gallery = data.gallery
            batch = data.queries(args.batch, rng)
            with stage(f"D={dim} N={photos}: numpy, batch {args.batch} and 1"), one_thread():
                batch_ms = 1000 * timed(per_batch(gallery, batch), args.seconds) / args.batch
                single_ms = 1000 * timed(per_batch(gallery, batch[:1]), args.seconds)
                rest_ms = 1000 * timed(answered_product_step(gallery, batch, rng), args.seconds) / args.batch
            remainder.append(f"{photos:,}: {ms(rest_ms)}")
            id_bytes = (gallery.photos.nbytes + gallery.sha256.nbytes) // photos
            index_ms, recall = "-", "-"
            if library is not None:
                with stage(f"D={dim} N={photos}: {library} index"):
                    result = time_index(library, data, args.seconds, rng)
                index_ms, recall = ms(result.ms_per_query), f"{result.recall:.3f}"
                builds.append(f"{photos:,}: {result.build_s:.1f} s")
            rows.append(
                (
                    f"{photos:,}",
                    f"{len(gallery.products):,}",
                    ms(batch_ms),
                    ms(single_ms),
                    f"{ram_bytes(gallery) / MiB:.1f}",
                    f"{disk_bytes(gallery) / MiB:.1f}",
                    index_ms,
                    recall,
                    f"{100 * batch_ms / args.backbone_ms:.1f}%",
                )
            )
            del data, gallery
        print(f"\n## D = {dim} (float32 features {4 * dim:,} B a photo in RAM, float16 {2 * dim:,} B on disk)\n")
        header = (
            "gallery photos",
            "products",
            f"numpy ms/frame (batch {args.batch})",
            "numpy ms/frame (batch 1)",
            "RAM MiB",
            "disk MiB",
            "index ms/frame",
            "index recall@3",
            "share of the backbone",
        )
        print(table(rows, header))
        print(
            f"\nRAM and disk include each photo's id and sha256 (numpy unicode, 4 B a character: {id_bytes} B a photo)."
        )
        if builds:
            print(
                f"Index build ({library}, every core; connectivity {CONNECTIVITY}, expansion {EXPANSION_ADD} add /"
                f" {EXPANSION_SEARCH} search): {', '.join(builds)}."
            )
        print(
            "An index path would still need the answered product's nearest photo for the novelty score (its rows"
            f" only, ms/frame): {', '.join(remainder)}."
        )
    print(
        f"\nThe backbone itself: about {args.backbone_ms:g} ms of one core per frame at 224x224 on this box"
        " (bench.e2e's ceiling); share of the backbone = numpy ms/frame at batch"
        f" {args.batch} / {args.backbone_ms:g} ms."
    )
    print(f"Run time {time.perf_counter() - began:.0f} s.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
