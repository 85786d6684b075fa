"""Enrolled models against a full retrain on the same photos, over several never-seen splits and both data sets.

    .venv/bin/python -m bench.enrol_accuracy [--splits 3] [--products 10] [--photos 20] [--test-per-class 100]
        [--bases fashion,digits]

bench.enrol measures one split through the real stack (two Fashion-MNIST products kept out as never-seen: 60
frames), where the never-seen refusal of one model moved 20 points between two fits of the same rows. This bench
measures the spread offline: for each data set as the base (Fashion-MNIST with the digits enrolled, and the
reverse) and each split (a different pair of the base's ten products kept out as never-seen), the base is trained
(full search) on the other eight, the new products are enrolled one after the other in this process
(models.train.enrolment.enrol, quick), the store is copied (the quick version) and consolidated
(consolidate_all), and `partsight train` runs again on the same photos twice: as an operator would run it (the
retrain: cross-validation chooses the feature recipe again) and with the base's recipe pinned (what a
consolidation, which has only the stored rows in that recipe, can reach). Each model answers the held-out photos:
enrolled and base products' top-1 (the best guess, answered or not; issue 19's 2 points are of top-1) and
answered right ("unknown" counts as wrong), and never-seen products refused.

One table per split; then each model's mean and range over the splits; then each model's difference from the
retrain, split by split (the same photos answered by both), as a mean with its standard error over the splits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.enrol import digit_sets, evaluate, fashion_sets, train_store

MODELS = ("quick", "consolidated", "retrain", "retrain, base recipe")
PAIRED = ("enrolled top-1", "base top-1", "never-seen refused")  # the figures issue 19 sets bounds on
FIGURES = ("enrolled top-1", "enrolled right", "base top-1", "base right", "never-seen refused")


def one_split(
    work: Path, known: dict[str, Any], new: dict[str, Any], unseen_names: list[str]
) -> dict[str, list[float]]:
    """The four models of one split (MODELS), each with FIGURES."""
    from models.bundle import load_model
    from models.train.consolidation import consolidate_all
    from models.train.enrolment import enrol
    from partsight.enrol_cli import LocalFeatures

    base = {product: sets for product, sets in known.items() if product not in unseen_names}
    store, _ = train_store(work / "base", base)
    features = LocalFeatures("cpu", None)
    for product, (record, photos, _) in new.items():
        enrol(
            store,
            product,
            [(f"{i:03d}.png", data) for i, data in enumerate(photos)],
            record=record,
            features_of=features,
        )
    quick = work / "quick"
    subprocess.run(["cp", "-a", str(store), str(quick)], check=True)
    rounds = consolidate_all(store)
    if rounds[0].version is None:
        raise SystemExit(f"the consolidation of {store} wrote nothing: {rounds[0].reason}")
    moved = json.loads((store / rounds[0].version / "report.json").read_text()).get("feature_centre_moved")
    refit = f"the consolidation's refit {rounds[0].refit_s:.0f} s"
    print(f"  the features' mean moved by {moved} (feature_centre_moved); {refit}")
    retrain, _ = train_store(work / "retrain", {**base, **new})
    pinned, _ = train_store(work / "pinned", {**base, **new}, recipe=load_model(store, searchable=False).recipe)
    unseen = {product: known[product][2] for product in unseen_names}
    tests_new = {product: sets[2] for product, sets in new.items()}
    tests_base = {product: sets[2] for product, sets in base.items()}
    figures = {}
    for name, path in zip(MODELS, (quick, store, retrain, pinned), strict=True):
        on_new, on_base = evaluate(path, tests_new, unseen), evaluate(path, tests_base, {})  # unseen answered once
        figures[name] = [
            on_new["top1"],
            on_new["accuracy"],
            on_base["top1"],
            on_base["accuracy"],
            on_new["unseen_refused"],
        ]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=3, help="never-seen pairs per data set (at most 5)")
    parser.add_argument("--products", type=int, default=10, help="new products enrolled")
    parser.add_argument("--photos", type=int, default=20, help="photos of each product")
    parser.add_argument(
        "--test-per-class", type=int, default=100, help="held-out photos of each product (the digits have 174 or more)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="kept for inspection (default: a temporary folder)")
    parser.add_argument(
        "--bases", default="fashion,digits", help="the data sets trained as the base, comma-separated (fashion, digits)"
    )
    args = parser.parse_args()
    bases = list(dict.fromkeys(args.bases.split(",")))  # each once
    if not bases or set(bases) - {"fashion", "digits"}:
        parser.error(f"--bases: fashion, digits or both, not {args.bases!r}")
    if not 1 <= args.splits <= 5:
        parser.error("--splits: 1 to 5 (the base's ten products make five pairs)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="partsight-bench-enrol-accuracy-"))
    fashion = fashion_sets(args.photos, args.test_per_class)
    digits = digit_sets(args.photos, args.test_per_class)
    results: dict[str, dict[str, list[list[float]]]] = {}
    pairs = {
        "fashion": ("Fashion-MNIST base, digits enrolled", fashion, digits),
        "digits": ("digits base, Fashion-MNIST enrolled", digits, fashion),
    }
    for label, known, new in (pairs[base] for base in bases):
        names = sorted(known)
        enrolled = dict(list(new.items())[: args.products])
        results[label] = {name: [] for name in MODELS}
        for split in range(args.splits):
            unseen_names = names[2 * split : 2 * split + 2]
            folder = work / f"{label.split(',')[0].replace(' ', '-')}-{split}"
            shutil.rmtree(folder, ignore_errors=True)
            started = time.monotonic()
            figures = one_split(folder, known, enrolled, unseen_names)
            print(f"\n{label}, never-seen {', '.join(unseen_names)} ({time.monotonic() - started:.0f} s)")
            print("| model | " + " | ".join(FIGURES) + " |")
            print("|---|" + "---:|" * len(FIGURES))
            for name in MODELS:
                results[label][name].append(figures[name])
                print(f"| {name} | " + " | ".join(f"{100 * value:.1f}%" for value in figures[name]) + " |")
    print(f"\nover {args.splits} split(s): mean (lowest to highest)")
    print("| data set | model | " + " | ".join(FIGURES) + " |")
    print("|---|---|" + "---:|" * len(FIGURES))
    for label, models in results.items():
        for name, rows in models.items():
            cells = []
            for column in range(len(FIGURES)):
                values = [100 * row[column] for row in rows]
                cells.append(f"{statistics.mean(values):.1f}% ({min(values):.1f}-{max(values):.1f})")
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")
    print_paired(results)
    return 0


def print_paired(results: dict[str, dict[str, list[list[float]]]]) -> None:
    """Each model's difference from the retrain, split by split, in points: the mean over the splits and its
    standard error (none with one split)."""
    print("\ndifference from the retrain, in points: mean over the splits (standard error)")
    print("| data set | model | " + " | ".join(PAIRED) + " |")
    print("|---|---|" + "---:|" * len(PAIRED))
    for label, models in results.items():
        for name, rows in models.items():
            if name == "retrain":
                continue
            cells = []
            for figure in PAIRED:
                column = FIGURES.index(figure)
                gaps = [100 * (row[column] - own[column]) for row, own in zip(rows, models["retrain"], strict=True)]
                spread = f" ({statistics.stdev(gaps) / len(gaps) ** 0.5:.1f})" if len(gaps) > 1 else ""
                cells.append(f"{statistics.mean(gaps):+.1f}{spread}")
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
