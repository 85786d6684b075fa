"""What a head's quick-enrolment refinements cost a frame, applied as heads apply them against every one on every row.

    .venv/bin/python -m bench.refinement_cost --store W/n10/store [--batches 1,32] [--repeats 20]

For each version the store keeps (a store that enrolled many parts in a row: `bench.scale --enrolments-only
--enrolments 1000 --consolidate-behind --workdir W` leaves versions of 0 to hundreds of refinements), the head's
probabilities for real photos of its products (the enrolment base's, a seeded draw of each batch size) are computed
twice in the same run: as the head applies its refinements (models.answer.refinements.RefinementLayout: only those
whose group holds at least UNREFINED_MASS of a row) and, the baseline, every refinement on every row as heads did
before. Milliseconds per call (the best of `repeats`), how many refinements a row's batch visited, and how far the two
answers are apart (largest probability difference; rows whose best product differs). One core. Prints one table.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from models.answer.head import ProductHead
from models.answer.refinements import UNREFINED_MASS, RefinementLayout
from models.bundle import load_model
from models.store.versions import MANIFEST, version_folders
from models.train.enrolment import base_of


def every_refinement_everywhere(head: ProductHead, nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The baseline: each refinement, in order, on every row, however little its group holds."""
    column = {product: index for index, product in enumerate(head.products)}
    result = np.array(nodes, dtype=np.float64, copy=True)
    for refinement in head.refinements:
        columns = [column[name] for name in refinement.classifier.classes]
        mass = result[:, columns].sum(axis=1, keepdims=True)
        result[:, columns] = mass * refinement.classifier.probabilities(x)
    return result


def best_of(repeats: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def visited(layout: RefinementLayout, nodes: np.ndarray) -> int:
    """How many refinements a batch's rows hold at least UNREFINED_MASS of, as the head gave them (the layout visits
    these and the later ones sharing a product with one it applied)."""
    if not layout.refinements:
        return 0
    flat = np.concatenate(layout.columns)
    starts = np.cumsum([0, *(len(c) for c in layout.columns[:-1])])
    held = np.add.reduceat(nodes[:, flat], starts, axis=1)
    return int((held >= UNREFINED_MASS).any(axis=0).sum())


def measure(version: Path, batches: list[int], repeats: int, seed: int) -> list[dict[str, object]]:
    bundle = load_model(version, searchable=False)
    head = bundle.head
    base, _ = base_of(bundle)
    real = np.flatnonzero(~base.synthetic)
    rng = np.random.default_rng(seed)
    layout = RefinementLayout(head.products, head.refinements)
    rows = []
    for batch in batches:
        x = base.features[rng.choice(real, batch, replace=False)].astype(np.float32)
        nodes = head.unrefined(x)
        ours = layout.apply(nodes, x)
        theirs = every_refinement_everywhere(head, nodes, x)
        rows.append(
            {
                "version": version.name,
                "products": len(head.products),
                "refinements": len(head.refinements),
                "batch": batch,
                "everywhere_ms": best_of(repeats, functools.partial(every_refinement_everywhere, head, nodes, x)),
                "layout_ms": best_of(repeats, functools.partial(layout.apply, nodes, x)),
                "held": visited(layout, nodes),
                "largest_difference": float(np.abs(ours - theirs).max()),
                "best_differs": int((ours.argmax(axis=1) != theirs.argmax(axis=1)).sum()),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, type=Path, help="a model store whose versions hold refinements")
    parser.add_argument("--batches", default="1,32", help="frames per call, comma-separated")
    parser.add_argument("--repeats", type=int, default=20, help="calls timed per cell (the best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.store / "current").exists():
        raise SystemExit(f"{args.store} is not a model store (no 'current')")
    batches = [int(b) for b in args.batches.split(",")]
    versions = sorted(
        version_folders(args.store),
        key=lambda v: len(json.loads((v / MANIFEST).read_text())["head"].get("refinements", [])),
    )
    with threadpool_limits(limits=1):
        results = [row for version in versions for row in measure(version, batches, args.repeats, args.seed)]
    print(f"\nRefinements on real photos of the catalog, one core, best of {args.repeats} calls")
    print(
        "| version | products | refinements | frames a call | every one everywhere ms | as applied ms | ratio "
        "| refinements held by the rows | largest difference | rows whose best differs |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        ratio = float(r["everywhere_ms"]) / max(float(r["layout_ms"]), 1e-9)  # type: ignore[arg-type]
        print(
            f"| {r['version']} | {r['products']} | {r['refinements']} | {r['batch']} | {r['everywhere_ms']:.2f} "
            f"| {r['layout_ms']:.2f} | {ratio:.2f}x | {r['held']} | {r['largest_difference']:.1e} "
            f"| {r['best_differs']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
