"""Learning curves of a tuned backbone: what tuning gives, epoch by epoch and recipe by recipe, against the targets.

    .venv/bin/python -m bench.tuning_curves [--datasets fashion,digits] [--shots 20] [--epochs 12[,E...]] [--test 1000]
        [--recipes '[{}, {"first_block": 8}, {"learning_rate": 0.001}]'] [--skip-shipped] [--seed 0] [--cache DIR]

For each data set and photos per product (bench.accuracy's photos: --test photos drawn from Fashion-MNIST's test
split, the digits' 30% split), each tuning recipe (models.train.tuning.TuneOptions as JSON; `{}` is `partsight train
--tune`'s) is run on every photo with 4 synthetic copies each, as the training makes them, for --epochs (its cosine
schedule over them; no early stop, no folds; each of several numbers of epochs is a run of its own). Before the
first epoch (epoch 0, the frozen network) and after each, test photos none of it trained on are scored: the tuned
classifier's top-1 (the head trained with the blocks) and a linear probe's (C=1) on the tuned last layer, fitted on
the photos tuned on. Unless --skip-shipped, what `partsight train` ships on those features (recipe, structure and
classifiers by cross-validation, bench.accuracy's `ship`) is scored on the frozen network and on each run's last
epoch.

Issue 20's targets at 20 photos per product: Fashion-MNIST 85%, the digits 97%. Where a curve flattens below its
target, more epochs of that recipe will not reach it.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy import DataSet, Superset, answers_shipped_on, digits, fashion, grey_photo, head_search, pick
from bench.e2e import table

TARGETS = {"Fashion-MNIST": 0.85, "digits (scikit-learn)": 0.97}


def recipe_name(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in overrides.items()) or "shipped (--tune)"


def shipped_top1(
    superset: Superset, data: DataSet, index: np.ndarray, names: list[str], args: argparse.Namespace
) -> float:
    """What `partsight train` ships on `superset`'s features of these photos, scored on the test photos."""
    answers = answers_shipped_on(superset, data, index, names, args.search, args.seed)
    return float((answers == data.test_labels).mean())


def curves_of(data: DataSet, k: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each recipe's curve on `k` photos per product, and what ships on its last epoch's features."""
    from models.extract.backbones import get_backbone, load_network
    from models.extract.decode import resize_center_crop
    from models.train.augment import Augmenter
    from models.train.tuning import TuneOptions, learning_curve

    spec = get_backbone("efficientnet_lite0")
    size = spec.input_size
    network, _ = load_network(spec)
    index = pick(data.train_labels, k, (args.seed, k), range(len(data.products)))
    names = [data.products[int(label)] for label in data.train_labels[index]]
    test_names = [data.products[int(label)] for label in data.test_labels]
    frozen = None if args.skip_shipped else shipped_top1(Superset(Path(args.cache)), data, index, names, args)

    def test_input(i: int) -> np.ndarray:
        return np.asarray(resize_center_crop(grey_photo(data.test_images[i]), size))

    runs = []
    for overrides, epochs in itertools.product(args.recipes, args.epochs):
        options = TuneOptions(**{"epochs": epochs, "seed": args.seed, **overrides})
        name = recipe_name(overrides) + (f", {epochs} epochs" if len(args.epochs) > 1 else "")
        augmenter = Augmenter(copies=options.copies, seed=args.seed)

        def inputs(i: int, augmenter: Augmenter = augmenter) -> list[np.ndarray]:
            photo = grey_photo(data.train_images[index[i]])  # as a training folder holds it (bench.accuracy: 2x)
            return [
                np.asarray(resize_center_crop(view, size))
                for view in (photo, *augmenter.variants(photo, int(index[i])))
            ]

        started = time.time()
        curve, state = learning_curve(
            network,
            inputs,
            names,
            test_input,
            test_names,
            views=1 + options.copies,
            mean=spec.mean,
            std=spec.std,
            options=options,
        )
        seconds = time.time() - started
        print(f"  {data.name}, {k} per product, {name}: {seconds:.0f} s", file=sys.stderr)
        for epoch in curve:
            print(f"    {epoch}", file=sys.stderr)
        tuned = None
        if not args.skip_shipped:
            network_tuned = copy.deepcopy(network)
            network_tuned.load_state_dict(state)
            tuned = shipped_top1(Superset(Path(args.cache), network=network_tuned), data, index, names, args)
        runs.append({"recipe": name, "curve": curve, "seconds": seconds, "frozen": frozen, "tuned": tuned})
    return runs


def percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def curve_rows(runs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per epoch: each recipe's test top-1, the tuned classifier's / the probe's."""
    epochs = max(len(run["curve"]) for run in runs)
    rows = []
    for epoch in range(epochs):
        cells = []
        for run in runs:
            point = run["curve"][epoch] if epoch < len(run["curve"]) else None
            cells.append("" if point is None else f"{point['test_top1']:.1%} / {point['probe_top1']:.1%}")
        rows.append((str(epoch) + (" (frozen)" if epoch == 0 else ""), *cells))
    return rows


def summary_rows(name: str, k: int, runs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for run in runs:
        probes = [point["probe_top1"] for point in run["curve"]]
        best = int(np.argmax(probes))
        rows.append(
            (
                name,
                str(k),
                run["recipe"],
                percent(probes[0]),
                f"{probes[best]:.1%} (epoch {best})",
                percent(probes[-1]),
                percent(run["frozen"]),
                percent(run["tuned"]),
                percent(TARGETS.get(name)),
                f"{run['seconds']:.0f}",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="fashion,digits", help="comma-separated: fashion, digits")
    parser.add_argument("--shots", default="20", help="photos per product, comma-separated")
    parser.add_argument(
        "--epochs",
        default="12",
        help="epochs of each recipe (no early stop); several, comma-separated: a run of each (its schedule over them)",
    )
    parser.add_argument("--test", type=int, default=1000, help="Fashion-MNIST test photos (the digits use all 540)")
    parser.add_argument(
        "--recipes",
        default='[{}, {"first_block": 8}, {"learning_rate": 0.001}]',
        help="a JSON list of models.train.tuning.TuneOptions settings, one curve each ({} is --tune's)",
    )
    parser.add_argument("--classifiers", default="logistic,linear_svm", help="what the shipped heads choose among")
    parser.add_argument("--skip-shipped", action="store_true", help="only the curves (no shipped figures)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "partsight-bench"), help="superset cache")
    args = parser.parse_args()

    args.search = head_search(args.classifiers)
    args.recipes = json.loads(args.recipes)
    args.epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
    shots = [int(s) for s in args.shots.split(",") if s.strip()]
    sets = {"fashion": lambda: fashion(args.test, args.seed, shots), "digits": lambda: digits(args.seed)}
    summary: list[tuple[str, ...]] = []
    for key in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        data = sets[key]()
        for k in shots:
            runs = curves_of(data, k, args)
            print(f"\n## {data.name}, {k} photos per product, {len(data.test_labels)} test photos: top-1, the tuned")
            print("classifier / a linear probe on the tuned last layer\n")
            print(table(curve_rows(runs), ("epoch", *[run["recipe"] for run in runs])))
            summary += summary_rows(data.name, k, runs)
            sys.stdout.flush()
    print("\n## Summary: a linear probe on the last layer, and what `partsight train` ships\n")
    print(
        table(
            summary,
            (
                "data set",
                "photos per product",
                "recipe",
                "probe, frozen",
                "probe, best epoch (chosen on the test photos)",
                "probe, last epoch",
                "shipped, frozen",
                "shipped, last epoch",
                "target",
                "run s (scoring included)",
            ),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
