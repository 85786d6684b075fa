"""Accuracy and open-set figures on two data sets, with k photos per product, against today's features and head.

    .venv/bin/python -m bench.accuracy [--datasets fashion,digits,parts] [--shots 1,5,20,100] [--full] [--test 10000]
                                       [--classifiers logistic,linear_svm] [--seed 0] [--cache DIR]

Data sets: Fashion-MNIST (Debian's dataset-fashion-mnist; the official 10,000-photo test split; Zalando's
ten product kinds in five categories) and, kept apart from every choice, scikit-learn's handwritten digits
(1,797 8x8 scans from UCI, ten digits in three shape families; a stratified 70/30 split, so at most ~125
photos per digit: its rows are 1, 5, 20, 50 and the full train part); and `parts`, 40 drawn look-alike machined
parts (models.train.parts: five of each of eight families, neighbours one detail apart), 50 photos of each to
train from and 20 taken on another day to test, sent as JPEGs.

Every method is scored on the test photos: top-1, macro-F1 and category accuracy (of the predicted product).
  last layer + LR          today's features (the pooled last layer) + logistic regression (C=1)
  last layer + tuned head  today's features + today's default head (category-first, classifiers by CV)
  + richer features        pooled intermediate blocks beside the last layer, each L2-normalised (no transform)
  + transform              the same with the signed square root and centring on the enrolled mean
  gallery scorer           the transformed features scored by prototypes (class means / k-means centres)
  + flip averaging         the transformed features of each photo averaged with its mirror image's (2x the work)
  shipped                  what `partsight train` does: recipe and structure chosen by CV, classifiers by CV
  tuned + shipped          `partsight train --tune` (--tune-up-to K): the backbone's last blocks tuned on the
                           photos first (models.train.tuning), shown whether or not its held-out margin keeps it
Open set: trained without two products, never-seen frames refused, known frames answered right, known refused
and AUROC (never-seen against known), for today's threshold (calibrated to precision 0.9 on known products)
and for the shipped novelty score (fitted on leave-products-out folds to refuse at least 80%).

Features come from one ONNX Runtime graph giving every part (the superset); they are cached in --cache so
a rerun skips the backbone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.extract.recipe import LEGACY, FeatureRecipe

BLOCKS = FeatureRecipe(parts=("b10", "b14", "b15", "head"))
TRANSFORMED = FeatureRecipe(parts=("b10", "b14", "b15", "head"), power=True, center=True)


@dataclass(frozen=True)
class DataSet:
    name: str
    products: tuple[str, ...]  # by label
    categories_of: dict[str, str]
    train_images: np.ndarray  # (N, H, W) uint8, dark product on light
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    held_out: tuple[str, str]
    shots: tuple[int, ...]


def grey_photo(image: np.ndarray, size: int = 112) -> Image.Image:
    """A data set's image as the photo the worker would decode: grey scans enlarged, colour photos resized."""
    if image.ndim == 3:
        return Image.fromarray(image, mode="RGB").resize((size, size), Image.Resampling.BILINEAR)
    return Image.fromarray(image, mode="L").resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def fashion(test_limit: int, seed: int, shots: Sequence[int]) -> DataSet:
    from models.train import datasets

    train, test = datasets.load_split("train"), datasets.load_split("test")
    index = np.sort(
        np.random.default_rng(seed).choice(len(test.labels), size=min(test_limit, len(test.labels)), replace=False)
    )
    return DataSet(
        "Fashion-MNIST",
        tuple(p for p, _, _ in datasets.PRODUCTS),
        {p: c for p, _, c in datasets.PRODUCTS},
        255 - train.images,
        train.labels,
        255 - test.images[index],
        test.labels[index],
        ("bag", "ankle-boot"),
        tuple(shots),
    )


DIGIT_FAMILIES = {0: "round", 6: "round", 8: "round", 9: "round", 1: "straight", 4: "straight", 7: "straight"}


def digits(seed: int) -> DataSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (255 - np.round(bunch.images * (255 / 16))).astype(np.uint8)
    train_x, test_x, train_y, test_y = train_test_split(
        images, bunch.target, test_size=0.3, stratify=bunch.target, random_state=seed
    )
    names = tuple(f"digit-{d}" for d in range(10))
    return DataSet(
        "digits (scikit-learn)",
        names,
        {f"digit-{d}": DIGIT_FAMILIES.get(d, "curved") for d in range(10)},
        train_x,
        train_y,
        test_x,
        test_y,
        ("digit-3", "digit-7"),
        (1, 5, 20, 50),
    )


def look_alike_parts(seed: int, products: int = 40, train_per: int = 50, test_per: int = 20) -> DataSet:
    """`products` drawn look-alike parts (models.train.parts: five of each of eight families, neighbours one detail
    apart), photos taken anew and sent as JPEGs; the test photos on another day (another seed)."""
    import io

    from models.train import parts

    items = parts.parts(products)

    def shots(per: int, day: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, item in enumerate(items):
            for k in range(per):
                rng = np.random.default_rng([seed, day, item.index, k])
                sent = parts.jpeg(parts.photo(item, k, seed=seed * 1000 + day, size=128), rng)
                images.append(np.asarray(Image.open(io.BytesIO(sent)).convert("RGB")))
                labels.append(label)
        return np.stack(images), np.asarray(labels)

    train_x, train_y = shots(train_per, 0)
    test_x, test_y = shots(test_per, 1)
    return DataSet(
        f"look-alike parts ({products} drawn products)",
        tuple(item.product for item in items),
        {item.product: item.family.category for item in items},
        train_x,
        train_y,
        test_x,
        test_y,
        (items[9].product, items[18].product),  # a gear and a bracket whose look-alikes stay known
        (1, 5, 20, train_per),
    )


class Superset:
    """Raw superset rows of images as the worker would see them, from one ONNX graph, cached on disk."""

    def __init__(self, cache: Path, *, flip: bool = False, network: Any = None) -> None:
        """`network`: a tuned one (default: the packaged ImageNet weights)."""
        from models.extract.backbones import get_backbone, load_network
        from models.extract.onnx_export import export_backbone, onnx_session
        from models.extract.recipe import SUPERSET_VERSION
        from models.store.versions import file_sha256

        self.spec = get_backbone("efficientnet_lite0")
        if network is None:
            network, weights = load_network(self.spec)
            weights_id = file_sha256(weights)[:16]
        else:
            digest = hashlib.sha256()
            for tensor in network.state_dict().values():
                digest.update(tensor.detach().cpu().numpy().tobytes())
            weights_id = "tuned-" + digest.hexdigest()[:16]
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self.namespace = f"{weights_id}-superset{SUPERSET_VERSION}" + ("-flip" if flip else "")
        graph = Path(tempfile.mkdtemp(prefix="partsight-superset-")) / "superset.onnx"
        check = np.full((2, self.spec.input_size, self.spec.input_size, 3), 200, dtype=np.uint8)
        check[1, 50:150, 60:160] = 30
        export_backbone(self.spec, network, graph, check, superset=True, recipe=FeatureRecipe(("head",), flip=flip))
        self.session: Any = onnx_session(graph, threads=2)

    def __call__(self, images: np.ndarray, label: str) -> np.ndarray:
        from models.extract.decode import resize_center_crop

        digest = hashlib.sha256(images.tobytes()).hexdigest()[:16]
        path = self.cache / f"{label}-{len(images)}-{digest}-{self.namespace}.npy"
        if path.is_file():
            cached: np.ndarray = np.load(path, allow_pickle=False)
            return cached
        started, out = time.time(), []
        for start in range(0, len(images), 64):
            batch = np.stack(
                [
                    np.asarray(resize_center_crop(grey_photo(i), self.spec.input_size))
                    for i in images[start : start + 64]
                ]
            )
            out.append(np.asarray(self.session.run(None, {"images": batch})[0], dtype=np.float32))
        rows = np.concatenate(out)
        np.save(path, rows, allow_pickle=False)
        print(f"  superset of {len(images)} {label} photos in {time.time() - started:.0f} s", file=sys.stderr)
        return rows


def pick(labels: np.ndarray, k: int, seed: Sequence[int], classes: Sequence[int]) -> np.ndarray:
    rng = np.random.default_rng(list(seed))
    picked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        picked.append(members if k >= len(members) else rng.choice(members, size=k, replace=False))
    return np.concatenate(picked)


def features_of(superset: np.ndarray, recipe: FeatureRecipe, center_from: np.ndarray) -> np.ndarray:
    """`superset` rows under `recipe`, centred on the mean of the enrolled rows `center_from` (superset too)."""
    from models.extract.recipe import combine_parts, finish, fit_center

    return finish(combine_parts(superset, recipe), fit_center(combine_parts(center_from, recipe), recipe))


def scores(truth: np.ndarray, predicted: np.ndarray, category: Callable[[int], str]) -> tuple[float, float, float]:
    from sklearn.metrics import f1_score

    same = np.array([category(int(t)) for t in truth]) == np.array([category(int(p)) for p in predicted])
    return float((truth == predicted).mean()), float(f1_score(truth, predicted, average="macro")), float(same.mean())


@dataclass(frozen=True)
class Shipped:
    recipe: FeatureRecipe
    center: np.ndarray | None
    fitted: Any  # models.train.trainer.FittedHead


def head_search(classifiers: str) -> list[Any]:
    """The heads a shipped training chooses among, from `--classifiers` (comma-separated kinds)."""
    from models.answer.classifiers import candidates, parse_names

    return candidates(parse_names(classifiers, ("logistic", "linear_svm", "rbf_svm", "knn", "mlp"), "kind"), ("none",))


def ship(
    train_superset: np.ndarray, names: list[str], data: DataSet, search: list[Any], seed: int, refuse: float | None
) -> Shipped:
    """What `partsight train` does with these photos: recipe, structure and classifiers by CV, the novelty score."""
    from models.extract.recipe import CANDIDATES, combine_parts, finish, fit_center
    from models.train.head_fitting import fit_model
    from models.train.trainer import choose_recipe

    labels = np.asarray(names)
    groups, synthetic = np.arange(len(labels)), np.zeros(len(labels), dtype=bool)
    recipe, _ = choose_recipe(  # no photo keys here: both choices order the rows by product alone (canonical_order)
        train_superset,
        labels,
        groups,
        synthetic,
        recipes=CANDIDATES,
        seed=seed,
        tuning_photos=3000,
        categories=np.array([data.categories_of[name] for name in names]),
    )
    combined = combine_parts(train_superset, recipe)
    center = fit_center(combined, recipe)
    features = finish(combined, center)
    fitted = fit_model(
        features, names, data.categories_of, seed=seed, search=search, tuning_photos=3000, refuse_unseen=refuse
    )
    return Shipped(recipe, center, fitted)


def shipped_answers(shipped: Shipped, test_superset: np.ndarray, data: DataSet) -> np.ndarray:
    from models.extract.recipe import combine_parts, finish

    test_x = finish(combine_parts(test_superset, shipped.recipe), shipped.center)
    head = shipped.fitted.head
    return np.array([data.products.index(head.products[i]) for i in head.probabilities(test_x).argmax(axis=1)])


def answers_shipped_on(
    superset: Superset, data: DataSet, index: np.ndarray, names: list[str], search: list[Any], seed: int
) -> np.ndarray:
    """What `partsight train` ships on `superset`'s features of the photos `index`, and its answers to every test
    photo (product indices)."""
    train_superset = superset(data.train_images[index], f"{data.name}-train-k{len(index)}")
    test_superset = superset(data.test_images, f"{data.name}-test")
    return shipped_answers(ship(train_superset, names, data, search, seed, None), test_superset, data)


def tuned_and_shipped(
    data: DataSet, index: np.ndarray, names: list[str], args: argparse.Namespace, search: list[Any], superset: Superset
) -> tuple[str, np.ndarray]:
    """`partsight train --tune` on these photos (models.train.tuning with training's 4 synthetic copies each), then
    what `partsight train` ships on the tuned features: its row says whether the tuning would have been kept."""
    import copy

    from models.extract.backbones import load_network
    from models.extract.decode import resize_center_crop
    from models.train.augment import Augmenter
    from models.train.tuning import TuneOptions, tune

    network, _ = load_network(superset.spec)
    size = superset.spec.input_size
    options = TuneOptions(**json.loads(args.tune_options))
    augmenter = Augmenter(copies=options.copies, seed=args.seed)

    def inputs(i: int) -> list[np.ndarray]:
        photo = grey_photo(data.train_images[index[i]], size=2 * size)
        views = [photo, *augmenter.variants(photo, int(index[i]))]
        return [np.asarray(resize_center_crop(view, size)) for view in views]

    result = tune(
        network,
        inputs,
        names,
        views=1 + options.copies,
        mean=superset.spec.mean,
        std=superset.spec.std,
        options=options,
    )
    tuned = copy.deepcopy(network)
    tuned.load_state_dict(result.state)  # also where the margin refused it: the bench shows what it gives
    record = result.record
    print(f"  tuning: {json.dumps({key: value for key, value in record.items() if key != 'epochs'})}", file=sys.stderr)
    for epoch in record["epochs"]:
        print(f"    {epoch}", file=sys.stderr)
    kept = "kept" if record["kept"] else "not kept"
    label = (
        f"tuned ({kept}: judged {record['frozen_top1']:.0%} -> {record['tuned_top1']:.0%}, "
        f"{record['seconds']:.0f} s) + shipped"
    )
    return label, answers_shipped_on(Superset(Path(args.cache), network=tuned), data, index, names, search, args.seed)


def accuracy_rows(
    data: DataSet, superset: Superset, flips: Superset, args: argparse.Namespace, search: list[Any]
) -> list[tuple[str, ...]]:
    from sklearn.linear_model import LogisticRegression

    from models.answer.classifiers import candidates
    from models.answer.head import CATEGORY_FIRST
    from models.train.head_fitting import fit_model

    test_superset = superset(data.test_images, f"{data.name}-test")
    category = {i: data.categories_of[p] for i, p in enumerate(data.products)}.__getitem__
    rows: list[tuple[str, ...]] = []
    for k in data.shots:
        index = pick(data.train_labels, k, (args.seed, k), range(len(data.products)))
        train_superset = superset(data.train_images[index], f"{data.name}-train-k{k}")
        labels = data.train_labels[index]
        names = [data.products[int(i)] for i in labels]
        label = "full" if k >= 1000 else str(k)
        methods: dict[str, np.ndarray] = {}
        legacy_train = features_of(train_superset, LEGACY, train_superset)
        legacy_test = features_of(test_superset, LEGACY, train_superset)
        started = time.time()
        methods["last layer + LR (C=1)"] = (
            LogisticRegression(C=1.0, max_iter=3000).fit(legacy_train, labels).predict(legacy_test)
        )

        def tuned(train_x: np.ndarray, test_x: np.ndarray, names: list[str] = names, **options: Any) -> np.ndarray:
            head = fit_model(train_x, names, data.categories_of, seed=args.seed, tuning_photos=3000, **options).head
            return np.array([data.products.index(head.products[i]) for i in head.probabilities(test_x).argmax(axis=1)])

        # at k = 1 nothing can be cross-validated: every choice falls back to its default
        methods["last layer + tuned head"] = tuned(legacy_train, legacy_test, search=search, structure=CATEGORY_FIRST)
        for method, recipe in (("+ richer features", BLOCKS), ("+ transform", TRANSFORMED)):
            methods[method] = tuned(
                features_of(train_superset, recipe, train_superset),
                features_of(test_superset, recipe, train_superset),
                search=search,
            )
        methods["gallery scorer (prototypes)"] = tuned(
            features_of(train_superset, TRANSFORMED, train_superset),
            features_of(test_superset, TRANSFORMED, train_superset),
            search=candidates(("prototype",), ("none",)),
        )
        if args.flip_up_to >= k:
            flipped = flips(data.train_images[index], f"{data.name}-train-k{k}")
            methods["+ flip averaging"] = tuned(
                features_of(flipped, TRANSFORMED, flipped),
                features_of(flips(data.test_images, f"{data.name}-test"), TRANSFORMED, flipped),
                search=search,
            )
        shipped = ship(train_superset, names, data, search, args.seed, None)
        methods[f"shipped ({shipped.recipe.label}, {shipped.fitted.head.structure})"] = shipped_answers(
            shipped, test_superset, data
        )
        if k >= 2 and args.tune_up_to >= k:
            method, predicted = tuned_and_shipped(data, index, names, args, search, superset)
            methods[method] = predicted
        for method, predicted in methods.items():
            top1, macro_f1, category_accuracy = scores(data.test_labels, predicted, category)
            rows.append((label, method, f"{top1:.1%}", f"{macro_f1:.3f}", f"{category_accuracy:.1%}"))
            print("  " + " | ".join(rows[-1]), file=sys.stderr)
        print(f"  {data.name} k={label}: {time.time() - started:.0f} s", file=sys.stderr)
    return rows


def open_set_rows(
    data: DataSet, superset: Superset, args: argparse.Namespace, search: list[Any]
) -> list[tuple[str, ...]]:
    from sklearn.metrics import roc_auc_score

    from models.answer.answerer import Answerer
    from models.answer.gallery import build_gallery
    from models.answer.head import CATEGORY_FIRST
    from models.extract.recipe import combine_parts, finish
    from models.train.head_fitting import fit_model

    test_superset = superset(data.test_images, f"{data.name}-test")
    known = [i for i, p in enumerate(data.products) if p not in data.held_out]
    unseen = np.isin(data.test_labels, [data.products.index(p) for p in data.held_out])
    truth = [data.products[int(t)] for t in data.test_labels]
    rows: list[tuple[str, ...]] = []
    for k in args.open_shots(data):
        index = pick(data.train_labels, k, (args.seed, k, 1), known)
        train_superset = superset(data.train_images[index], f"{data.name}-open-k{k}")
        names = [data.products[int(i)] for i in data.train_labels[index]]
        label = "full" if k >= 1000 else str(k)

        def row(
            method: str, decisions: list[Any], novelty: np.ndarray, threshold: float, label: str = label
        ) -> tuple[str, ...]:
            refused = np.array([d.status == "unknown" for d in decisions])
            right = np.array([d.product == t for d, t in zip(decisions, truth, strict=True)])
            return (
                label,
                method,
                f"{refused[unseen].mean():.1%}",
                f"{(right & ~refused)[~unseen].mean():.1%}",
                f"{refused[~unseen].mean():.1%}",
                f"{roc_auc_score(unseen, novelty):.3f}",
                f"{threshold:.3f}",
            )

        legacy_train = features_of(train_superset, LEGACY, train_superset)
        legacy_test = features_of(test_superset, LEGACY, train_superset)
        fitted = fit_model(
            legacy_train,
            names,
            data.categories_of,
            seed=args.seed,
            search=search,
            structure=CATEGORY_FIRST,
            tuning_photos=3000,
        )
        head, report = fitted.head, fitted.report
        probabilities = head.probabilities(legacy_test)
        decisions = [head.decide(p) for p in probabilities]
        rows.append(
            row(
                "today: last layer, precision 0.9",
                decisions,
                1 - probabilities.max(axis=1),
                report["product_threshold"],
            )
        )

        shipped = ship(train_superset, names, data, search, args.seed, args.refuse_unseen)
        # whether the novelty score took the product distance, out of fold (null: not considered, too few hidden)
        verdict = {
            "data set": data.name,
            "photos": label,
            "product_distance": shipped.fitted.report.get("product_distance"),
        }
        print(json.dumps(verdict), file=sys.stderr)
        train_x = finish(combine_parts(train_superset, shipped.recipe), shipped.center)
        test_x = finish(combine_parts(test_superset, shipped.recipe), shipped.center)
        fitted = shipped.fitted
        gallery = build_gallery(
            train_x, names, [str(i) for i in index], [""] * len(index), fitted.head.products, seed=args.seed
        )
        for point in args.operating_points:
            novelty_model = fitted.calibration.at(point)
            answerer = Answerer(fitted.head, gallery, novelty_model)
            decisions = answerer.answer(test_x, matches=0)
            novelty = np.array([d.novelty for d in decisions], dtype=float)
            rows.append(row(f"shipped: novelty, refuse {point:.0%}", decisions, novelty, novelty_model.threshold))
        for r in rows[-1 - len(args.operating_points) :]:
            print("  " + " | ".join(r), file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="fashion,digits", help="comma-separated: fashion, digits, parts")
    parser.add_argument("--shots", default="1,5,20,100", help="Fashion-MNIST photos per product, comma-separated")
    parser.add_argument(
        "--only-shots", default="", help="keep only these photos-per-product columns on every data set, e.g. 20"
    )
    parser.add_argument("--full", action="store_true", help="also the whole Fashion-MNIST train split (60,000; slow)")
    parser.add_argument("--test", type=int, default=10000, help="Fashion-MNIST test photos (the split has 10,000)")
    parser.add_argument("--classifiers", default="logistic,linear_svm", help="what the tuned heads choose among")
    parser.add_argument(
        "--refuse-unseen", default="0.8,0.9,0.95", help="the novelty's operating points to score, comma-separated"
    )
    parser.add_argument("--open-shots", default="", help="photos per product of the open-set rows (default: >= 20)")
    parser.add_argument("--skip-accuracy", action="store_true", help="only the open-set table")
    parser.add_argument("--skip-open-set", action="store_true", help="only the accuracy table")
    parser.add_argument("--flip-up-to", type=int, default=100, help="largest photos per product for + flip")
    parser.add_argument(
        "--tune-up-to",
        type=int,
        default=0,
        help="largest photos per product for the tuned row (partsight train --tune; minutes per column on a CPU)",
    )
    parser.add_argument(
        "--tune-options", default="{}", help='models.train.tuning.TuneOptions as JSON, e.g. {"epochs": 30}'
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "partsight-bench"), help="superset cache")
    args = parser.parse_args()

    from bench.e2e import table

    search = head_search(args.classifiers)
    shots = [int(s) for s in args.shots.split(",") if s.strip()] + ([6000] if args.full else [])
    args.operating_points = [float(x) for x in args.refuse_unseen.split(",") if x.strip()]
    args.refuse_unseen = args.operating_points[0]
    open_shots = [int(s) for s in args.open_shots.split(",") if s.strip()] if args.open_shots else None
    args.open_shots = lambda data: open_shots or [k for k in data.shots if k >= 20]
    superset = Superset(Path(args.cache))
    flips = Superset(Path(args.cache), flip=True)
    sets = {
        "fashion": lambda: fashion(args.test, args.seed, shots),
        "digits": lambda: digits(args.seed),
        "parts": lambda: look_alike_parts(args.seed),
    }
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        data = sets[name]()
        if name == "digits":
            data = DataSet(**{**data.__dict__, "shots": (*data.shots, 1000)})
        if args.only_shots:
            kept = {int(s) for s in args.only_shots.split(",") if s.strip()}
            data = DataSet(**{**data.__dict__, "shots": tuple(k for k in data.shots if k in kept)})
        accuracy = [] if args.skip_accuracy else accuracy_rows(data, superset, flips, args, search)
        open_set = [] if args.skip_open_set else open_set_rows(data, superset, args, search)
        print(f"\n## {data.name}: {len(data.test_labels)} test photos, seed {args.seed}\n")
        print(table(accuracy, ("photos per product", "method", "top-1", "macro-F1", "category")))
        print(f"\nOpen set: trained without {', '.join(data.held_out)}\n")
        print(
            table(
                open_set,
                (
                    "photos per product",
                    "method",
                    "never-seen refused",
                    "known answered right",
                    "known refused",
                    "AUROC",
                    "threshold",
                ),
            )
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
