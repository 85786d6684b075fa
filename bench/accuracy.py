"""Accuracy with few photos per product, on Fashion-MNIST (Debian's dataset-fashion-mnist), against baselines.

    .venv/bin/python -m bench.accuracy [--shots 1,5,20,100] [--full] [--test 10000] [--seed 0]

For k labelled photos per product (drawn from the official train split), every method is scored on the
official test split: top-1 accuracy, macro-F1 and category accuracy (tops, bottoms, dresses, footwear,
bags, derived from the predicted product). Methods: raw pixels + RBF SVM; hand-crafted features (HOG and an
intensity histogram, the pre-CNN way) + RBF SVM; CNN features (EfficientNet-Lite0 on ONNX Runtime, as
the worker computes them) + logistic regression; CNN + the trainer's tuned head (classifier and
preprocessing chosen by cross-validation), flat and category-first; + synthetic copies.
Open set: a second run trains without two products and reports how many of their test photos the
calibrated threshold answers "unknown", and how many known photos it wrongly refuses.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

HELD_OUT = ("bag", "ankle-boot")  # never-seen products for the open-set rows


def hog(images: np.ndarray, cell: int = 7, bins: int = 9) -> np.ndarray:
    """Histograms of oriented gradients on (N, 28, 28) images: 4x4 cells, unsigned orientations, L2 per cell."""
    x = images.astype(np.float32) / 255.0
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    gy[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    orientation = (np.rad2deg(np.arctan2(gy, gx)) % 180) // (180 / bins)
    n, h, w = x.shape
    cells = []
    for top in range(0, h, cell):
        for left in range(0, w, cell):
            m = magnitude[:, top : top + cell, left : left + cell].reshape(n, -1)
            o = orientation[:, top : top + cell, left : left + cell].reshape(n, -1).astype(int)
            histogram = np.zeros((n, bins), dtype=np.float32)
            np.add.at(histogram, (np.repeat(np.arange(n), m.shape[1]), o.reshape(-1)), m.reshape(-1))
            cells.append(histogram / (np.linalg.norm(histogram, axis=1, keepdims=True) + 1e-6))
    return np.concatenate(cells, axis=1)


def handcrafted(images: np.ndarray) -> np.ndarray:
    intensity = np.stack([np.histogram(image, bins=16, range=(0, 256))[0] for image in images]) / (28 * 28)
    return np.concatenate([hog(images), intensity.astype(np.float32)], axis=1)


class CnnFeatures:
    """The worker's features: the photo as the camera folder shows it, decoded to 224, ONNX Runtime."""

    def __init__(self, model_dir: Path) -> None:
        from models.recognizer import Recognizer

        self.recognizer = Recognizer.load(model_dir, device="cpu", engine="onnxruntime")

    def __call__(self, photos: Sequence[Image.Image], batch: int = 64) -> np.ndarray:
        from models.decode import resize_center_crop

        size = self.recognizer.input_size
        out = []
        for start in range(0, len(photos), batch):
            arrays = np.stack([np.asarray(resize_center_crop(p, size)) for p in photos[start : start + batch]])
            out.append(self.recognizer.features(arrays))
        return np.concatenate(out)


def pick(labels: np.ndarray, k: int, rng: np.random.Generator, classes: list[int]) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in classes])


def scores(truth: np.ndarray, predicted: np.ndarray, category_of: Callable[[int], str]) -> tuple[float, float, float]:
    from sklearn.metrics import f1_score

    categories = np.array([category_of(int(t)) for t in truth]) == np.array([category_of(int(p)) for p in predicted])
    return (
        float((truth == predicted).mean()),
        float(f1_score(truth, predicted, average="macro")),
        float(categories.mean()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shots", default="1,5,20,100", help="photos per product, comma-separated")
    parser.add_argument("--full", action="store_true", help="also train on the whole train split (60,000; slow)")
    parser.add_argument("--test", type=int, default=10000, help="test photos to score (the official split has 10,000)")
    parser.add_argument("--synthetic", type=int, default=4, help="synthetic copies per photo for the + synthetic row")
    parser.add_argument("--transforms", default="translate,sharpness,brightness,background")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifiers", default="all", help="classifiers the tuned heads choose among")
    parser.add_argument(
        "--full-classifiers",
        default="logistic,linear_svm",
        help="the tuned heads' choice on the full set (RBF SVM, kNN and MLP fitted on 60,000 photos take hours on a "
        "small CPU box)",
    )
    parser.add_argument("--synthetic-up-to", type=int, default=20, help="largest photos per product for + synthetic")
    parser.add_argument(
        "--preprocessing", default="all", help="preprocessing the tuned heads try (none,standardize,pca)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="only the tuned heads (skip pixels, HOG, plain LR)")
    args = parser.parse_args()

    import tempfile

    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    from models import datasets
    from models.augment import Augmenter, parse_transforms
    from models.classifiers import KINDS, PREPROCESSING, candidates, parse_names
    from models.head import CATEGORY_FIRST, FLAT
    from models.training import fit_head

    train, test = datasets.load_split("train"), datasets.load_split("test")
    rng = np.random.default_rng(args.seed)
    test_index = np.sort(rng.choice(len(test.labels), size=min(args.test, len(test.labels)), replace=False))
    test_images, test_labels = test.images[test_index], test.labels[test_index]
    names = [product for product, _, _ in datasets.PRODUCTS]
    category_of = {i: category for i, (_, _, category) in enumerate(datasets.PRODUCTS)}.__getitem__
    categories_by_name = {product: category for product, _, category in datasets.PRODUCTS}

    model_dir = Path(tempfile.mkdtemp(prefix="partsight-accuracy-"))
    from bench.e2e import demo_model, table

    cnn = CnnFeatures(demo_model(model_dir))  # any trained directory carries the exported backbone
    started = time.time()
    test_cnn = cnn([datasets.to_photo(image) for image in test_images])
    print(f"CNN features of {len(test_images)} test photos in {time.time() - started:.0f} s", file=sys.stderr)
    test_pixels = test_images.reshape(len(test_images), -1).astype(np.float32) / 255.0
    test_hand = handcrafted(test_images)
    augmenter = Augmenter(names=parse_transforms(args.transforms), copies=args.synthetic, seed=args.seed)

    shots = [int(s) for s in args.shots.split(",") if s.strip()] + ([6000] if args.full else [])
    preprocessing = parse_names(args.preprocessing, PREPROCESSING, "preprocessing")
    computed: dict[int, np.ndarray] = {}  # CNN features by train photo index, computed once per run

    def train_features(index: np.ndarray) -> np.ndarray:
        missing = [int(i) for i in index if int(i) not in computed]
        if missing:
            for i, row in zip(missing, cnn([datasets.to_photo(train.images[i]) for i in missing]), strict=True):
                computed[i] = row
        return np.stack([computed[int(i)] for i in index])

    def search_for(k: int) -> list:  # type: ignore[type-arg]
        kinds = parse_names(args.full_classifiers if k == 6000 else args.classifiers, KINDS, "kind")
        return candidates(kinds, preprocessing)

    rows: list[tuple[str, ...]] = []
    for k in shots:
        index = pick(train.labels, k, np.random.default_rng([args.seed, k]), list(range(10)))
        images, labels = train.images[index], train.labels[index]
        photos = [datasets.to_photo(image) for image in images]
        train_cnn = train_features(index)
        label = "full" if k == 6000 else str(k)
        methods: dict[str, np.ndarray] = {}
        if not args.no_baselines:
            methods["raw pixels + RBF SVM"] = (
                SVC(C=10, gamma="scale").fit(images.reshape(len(images), -1) / 255.0, labels).predict(test_pixels)
            )
            methods["HOG + histogram + RBF SVM"] = (
                SVC(C=10, gamma="scale").fit(handcrafted(images), labels).predict(test_hand)
            )
            methods["CNN + logistic regression (C=1)"] = (
                LogisticRegression(C=1.0, max_iter=3000).fit(train_cnn, labels).predict(test_cnn)
            )
        if k >= 2:
            products = [names[int(label_)] for label_ in labels]
            search = search_for(k)
            for structure in (FLAT, CATEGORY_FIRST):
                started = time.time()
                head, report = fit_head(
                    train_cnn, products, categories_by_name, seed=args.seed, structure=structure, search=search
                )
                tuned = head.probabilities(test_cnn).argmax(axis=1)
                methods[f"CNN + tuned head, {structure}"] = np.array([names.index(head.products[i]) for i in tuned])
                chosen = {level: entry["chosen"] for level, entry in report.get("classifiers", {}).items()}
                print(f"  {label} {structure}: {time.time() - started:.0f} s, chose {chosen}", file=sys.stderr)
            if k <= args.synthetic_up_to and args.synthetic:
                copies = [copy for n, photo in enumerate(photos) for copy in augmenter.variants(photo, n)]
                features = np.concatenate([train_cnn, cnn(copies)])
                all_products = products + [p for p in products for _ in range(args.synthetic)]
                groups = np.concatenate([np.arange(len(photos)), np.repeat(np.arange(len(photos)), args.synthetic)])
                synthetic = np.arange(len(features)) >= len(photos)
                head, _ = fit_head(
                    features,
                    all_products,
                    categories_by_name,
                    seed=args.seed,
                    groups=groups,
                    synthetic=synthetic,
                    search=search,
                )
                tuned = head.probabilities(test_cnn).argmax(axis=1)
                methods["CNN + tuned head, category-first + synthetic"] = np.array(
                    [names.index(head.products[i]) for i in tuned]
                )
        for method, predicted in methods.items():
            accuracy, macro_f1, category = scores(test_labels, predicted, category_of)
            rows.append((label, method, f"{accuracy:.1%}", f"{macro_f1:.3f}", f"{category:.1%}"))
            print("  " + " | ".join(rows[-1]), file=sys.stderr)

    open_rows: list[tuple[str, ...]] = []
    known = [i for i, name in enumerate(names) if name not in HELD_OUT]
    for k in [s for s in shots if s >= 5]:
        index = pick(train.labels, k, np.random.default_rng([args.seed, k, 1]), known)
        products = [names[int(label_)] for label_ in train.labels[index]]
        head, report = fit_head(train_features(index), products, categories_by_name, search=search_for(k))
        decisions = [head.decide(row) for row in head.probabilities(test_cnn)]
        unseen = np.isin(test_labels, [names.index(h) for h in HELD_OUT])
        refused = np.array([d.status == "unknown" for d in decisions])
        right = np.array([d.product == names[int(t)] for d, t in zip(decisions, test_labels, strict=True)])
        answered_known = ~unseen & ~refused
        open_rows.append(
            (
                "full" if k == 6000 else str(k),
                f"{refused[unseen].mean():.1%}",
                f"{refused[~unseen].mean():.1%}",
                f"{right[answered_known].mean():.1%}" if answered_known.any() else "n/a",
                f"{report['product_threshold']:.3f}",
            )
        )

    print(f"\n## Fashion-MNIST, {len(test_images)} test photos (official split), seed {args.seed}\n")
    print(table(rows, ("photos per product", "method", "top-1", "macro-F1", "category")))
    print(
        f"\nOpen set: tuned category-first head trained without {', '.join(HELD_OUT)}; "
        "the threshold calibrated to precision 0.9:\n"
    )
    print(
        table(open_rows, ("photos per product", "unseen refused", "known refused", "known answered right", "threshold"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
