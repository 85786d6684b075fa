"""The answer path at catalog scale: a frame's features to its decision (head, gallery, novelty score, matches),
with the exact gallery scan and with the photo index, on one core.

    .venv/bin/python -m bench.answer_path [--photos 10000,100000] [--per-product 20] [--dim 1904] [--frames 400]

A version of `--photos` gallery photos, `--per-product` of each product, products in families of 12 look-alikes
(bench.gallery_index's geometry): a category-first head of logistic nodes (categories are the families; each
node's weights are its classes' mean photos, a nearest-centre classifier, so answers mean something), the gallery
and a novelty score. The frames are new photos of gallery products, answered in a worker's batches of 4 through
`Answerer.answer`, as a worker answers them. Rows: the exact scan (the baseline, measured in the same run) and
the photo index (models.answer.photo_index), and the index with a novelty score that takes the product distance too
(models.answer.density; its build seconds are the density's fit, one core). Columns: ms per frame for the whole
answer path and for its head alone; recall@3 of the exact scan's three nearest photos among the index's matches;
the share of frames whose decision (product or unknown, and novelty) is the exact scan's; the seconds to build the
index.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np
from numpy import nan

from bench.gallery_index import frames, gallery, one_core
from models.answer.answerer import Answerer
from models.answer.head import Decision


@dataclass
class Row:
    photos: int
    products: int
    method: str
    ms_per_frame: float
    head_ms_per_frame: float
    recall: float
    same_decision: float
    build_s: float
    index_mb: float


def build_version(photos: np.ndarray, per_product: int) -> Answerer:
    from models.answer.gallery import build_gallery
    from models.answer.head import CATEGORY_FIRST, ProductHead, logistic_classifier
    from models.answer.novelty import NoveltyModel

    count = len(photos) // per_product
    labels = np.repeat(np.arange(count), per_product)[: len(photos)]
    products = [f"part-{i:05d}" for i in range(count)]
    families = max(1, count // 12)
    family_of = [f"family-{i % families:04d}" for i in range(count)]
    centres = unit_rows(np.stack([photos[labels == i].mean(axis=0) for i in range(count)]))
    scale = 20.0  # logits of a trained head: a frame's family sure, its product among look-alikes less so
    classifiers = {}
    family_names = sorted(set(family_of))
    members_of = {f: [i for i in range(count) if family_of[i] == f] for f in family_names}
    family_centres = unit_rows(np.stack([centres[members_of[f]].mean(axis=0) for f in family_names]))
    classifiers[None] = logistic_classifier(family_names, scale * family_centres, np.zeros(len(family_names)))
    for family in family_names:
        members = members_of[family]
        if len(members) > 1:
            classifiers[family] = logistic_classifier(
                [products[i] for i in members], scale * centres[members], np.zeros(len(members))
            )
    head = ProductHead(tuple(products), tuple(family_of), classifiers, structure=CATEGORY_FIRST)
    shas = [f"{i:064x}" for i in range(len(photos))]
    names = [f"images/{products[labels[i]]}/{i}.jpg" for i in range(len(photos))]
    built = build_gallery(photos, np.asarray(products)[labels], names, shas, products, max_per_product=per_product)
    novelty = NoveltyModel(np.array([-3.0, -2.0, -6.0, -0.5, -1.0]), 6.0, 0.5, 0.8)
    return Answerer(head, built, novelty)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def with_index(answerer: Answerer) -> tuple[Answerer, float, float]:
    from models.answer.photo_index import GraphSearch, build_index, row_keys

    gallery = answerer.gallery
    assert gallery is not None
    keys = row_keys(gallery.sha256, np.asarray(gallery.products)[gallery.labels])
    started = time.perf_counter()
    index = build_index(gallery.features, keys, threads=2)
    built = time.perf_counter() - started
    search = GraphSearch(index, keys, gallery.features)
    return replace(answerer, gallery=replace(gallery, search=search)), built, index.graph.index_file_size() / 1e6


def with_distance(answerer: Answerer) -> tuple[Answerer, float]:
    """`answerer` with a novelty score of the product distance too, and the seconds its density took to fit."""
    from models.answer.novelty import ALL_INPUTS

    gallery, novelty = answerer.gallery, answerer.novelty
    assert gallery is not None and novelty is not None
    fresh = replace(gallery)  # the density is fitted on first use: here, timed
    started = time.perf_counter()
    assert fresh.density is not None
    fitted = time.perf_counter() - started
    weights = np.append(novelty.weights, 1.0)
    return replace(answerer, gallery=fresh, novelty=replace(novelty, weights=weights, inputs=ALL_INPUTS)), fitted


def timed(answerer: Answerer, queries: np.ndarray, batch: int = 4) -> tuple[list[Decision], float, float]:
    decisions = []
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        decisions.extend(answerer.answer(queries[start : start + batch]))
    total = (time.perf_counter() - started) * 1000 / len(queries)
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        answerer.head.probabilities(queries[start : start + batch])
    head = (time.perf_counter() - started) * 1000 / len(queries)
    return decisions, total, head


def same(a: Decision, b: Decision) -> bool:
    return bool(a.product == b.product and abs((a.novelty or 0) - (b.novelty or 0)) < 1e-4)


def measure(size: int, per_product: int, dim: int, count: int) -> list[Row]:
    photos, centres = gallery(size, dim, per_product)
    queries = frames(centres, count, dim)
    exact = build_version(photos, per_product)
    products = len(exact.head.products)
    indexed, build_s, index_mb = with_index(exact)
    timed(exact, queries[:8])  # warm
    exact_decisions, exact_ms, exact_head = timed(exact, queries)
    index_decisions, index_ms, index_head = timed(indexed, queries)
    distanced, density_s = with_distance(indexed)
    timed(distanced, queries[:8])
    _, distance_ms, distance_head = timed(distanced, queries)
    recalls = []
    for a, b in zip(exact_decisions, index_decisions, strict=True):
        truth = {m["photo"] for m in a.matches}
        recalls.append(len(truth & {m["photo"] for m in b.matches}) / max(1, len(truth)))
    agree = np.mean([same(a, b) for a, b in zip(exact_decisions, index_decisions, strict=True)])
    return [
        Row(size, products, "exact scan (baseline)", exact_ms, exact_head, 1.0, 1.0, 0.0, 0.0),
        Row(
            size,
            products,
            "photo index (hnswlib)",
            index_ms,
            index_head,
            float(np.mean(recalls)),
            float(agree),
            build_s,
            index_mb,
        ),
        # its recall is the index's row's (the same search); its decisions are the distance score's, none to compare
        Row(size, products, "photo index + product distance", distance_ms, distance_head, nan, nan, density_s, nan),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", default="10000,100000")
    parser.add_argument("--per-product", type=int, default=20)
    parser.add_argument("--dim", type=int, default=1904)
    parser.add_argument("--frames", type=int, default=400)
    args = parser.parse_args()
    one_core()
    rows = [
        r for size in map(int, args.photos.split(",")) for r in measure(size, args.per_product, args.dim, args.frames)
    ]
    print(
        "| photos | products | method | ms/frame, answer path | vs exact | ms/frame, head | recall@3 | same decision "
        "| build s (2 threads) | index MB |"
    )
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    baseline = {r.photos: r.ms_per_frame for r in rows if r.build_s == 0.0}
    for r in rows:
        print(
            f"| {r.photos:,} | {r.products:,} | {r.method} | {r.ms_per_frame:.3f} | "
            f"{baseline[r.photos] / r.ms_per_frame:.1f}x | {r.head_ms_per_frame:.3f} | {shown(r.recall, '.3f')} | "
            f"{shown(r.same_decision, '.3f')} | {r.build_s:.1f} | {shown(r.index_mb, '.0f')} |"
        )
    print("build s: the index's on 2 threads; the product distance's row, its density's fit on one core")


def shown(value: float, spec: str) -> str:
    return "n/a" if np.isnan(value) else format(value, spec)


if __name__ == "__main__":
    main()
