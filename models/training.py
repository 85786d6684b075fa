"""A first trainer: `images/<category>/<product>/*` plus a catalog -> a verified, versioned model directory.

Features come from the frozen backbone; the head is a logistic regression whose regularisation is
chosen by stratified cross-validation when there are enough photos.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import write_model
from models.backbones import DEFAULT_BACKBONE, file_sha256, get_backbone
from models.catalog import Catalog, load_catalog
from models.decode import decode_image
from models.errors import DatasetError, ImageError
from models.features import FeatureExtractor
from models.head import ProductHead

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    category: str
    product: str


def scan_images(root: Path, catalog: Catalog) -> list[LabelledImage]:
    """List `root/<category>/<product>/*` and check it against the catalog; DatasetError for any mismatch."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    found: list[LabelledImage] = []
    problems: list[str] = []
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for product_dir in sorted(p for p in category_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            product = product_dir.name
            images = sorted(p for p in product_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if product not in catalog:
                problems.append(f"{product_dir}: product {product!r} is not in the catalog")
                continue
            if catalog[product]["category"] != category_dir.name:
                problems.append(
                    f"{product_dir}: the catalog puts {product!r} in category "
                    f"{catalog[product]['category']!r}, not {category_dir.name!r}"
                )
                continue
            if not images:
                problems.append(f"{product_dir}: product {product!r} has no .jpg/.png/.webp images")
                continue
            found.extend(LabelledImage(path, category_dir.name, product) for path in images)
    if problems:
        raise DatasetError("the image folder does not fit the catalog:\n  " + "\n  ".join(problems))
    if len({item.product for item in found}) < 2:
        raise DatasetError(f"{root}: at least two products with images are needed to train")
    return found


def progress(label: str, total: int) -> Callable[[int], None]:
    """A one-line progress bar on stderr (plain log lines when stderr is not a terminal)."""
    started = time.monotonic()
    tty = sys.stderr.isatty()

    def update(done: int) -> None:
        if not tty and done not in (total,) and done % max(1, total // 10):
            return
        rate = done / max(time.monotonic() - started, 1e-9)
        bar = "#" * int(30 * done / max(total, 1))
        line = f"{label}: [{bar:<30}] {done}/{total} ({rate:.1f}/s)"
        if tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return update


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def extract_features(
    images: list[LabelledImage], extractor: FeatureExtractor, *, batch_size: int = 32, show_progress: bool = True
) -> np.ndarray:
    size = extractor.spec.input_size
    update = progress("features", len(images)) if show_progress else (lambda done: None)
    chunks: list[np.ndarray] = []
    done = 0
    for batch in batched(images, batch_size):
        arrays = []
        for item in batch:
            try:
                arrays.append(decode_image(item.path.read_bytes(), size=size))
            except (ImageError, OSError) as exc:
                raise DatasetError(f"{item.path}: cannot be used for training: {exc}") from exc
        chunks.append(extractor(np.stack(arrays)))
        done += len(batch)
        update(done)
    return np.concatenate(chunks)


def fit_head(
    features: np.ndarray,
    products: list[str],
    categories_of: dict[str, str],
    *,
    product_threshold: float,
    category_threshold: float,
    seed: int = 0,
) -> tuple[ProductHead, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    labels = np.asarray(products)
    _, counts = np.unique(labels, return_counts=True)
    folds = int(min(5, counts.min()))
    report: dict[str, Any] = {"images": len(labels), "products": len(counts)}
    best_c = 1.0
    if folds >= 2:
        scores = {}
        for c in (0.3, 1.0, 3.0, 10.0):
            model = LogisticRegression(C=c, max_iter=2000)
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            scores[c] = float(cross_val_score(model, features, labels, cv=cv, scoring="f1_macro").mean())
        best_c = max(scores, key=lambda c: scores[c])
        report["cv_macro_f1"] = {str(c): round(s, 4) for c, s in scores.items()}
        logger.info("cross-validated macro-F1 by C: %s; chose C=%s", report["cv_macro_f1"], best_c)
    model = LogisticRegression(C=best_c, max_iter=2000).fit(features, labels)
    report["C"] = best_c
    head = ProductHead.from_logistic_regression(
        model, categories_of, product_threshold=product_threshold, category_threshold=category_threshold
    )
    return head, report


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainOptions:
    images: Path
    catalog: Path
    out: Path
    name: str = "partsight"
    backbone: str = DEFAULT_BACKBONE
    weights: Path | None = None
    device: str = "auto"
    batch_size: int = 32
    product_threshold: float = 0.5
    category_threshold: float = 0.5
    show_progress: bool = True


def train(options: TrainOptions) -> Path:
    """Train and write a new model version; returns its directory."""
    catalog = load_catalog(options.catalog)
    images = scan_images(options.images, catalog)
    spec = get_backbone(options.backbone)
    extractor = FeatureExtractor(spec, weights=options.weights, device=options.device, cpu_threads=None)
    logger.info("training on %d images of %d products", len(images), len({i.product for i in images}))
    features = extract_features(images, extractor, batch_size=options.batch_size, show_progress=options.show_progress)
    categories_of = {product: str(record["category"]) for product, record in catalog.items()}
    head, report = fit_head(
        features,
        [i.product for i in images],
        categories_of,
        product_threshold=options.product_threshold,
        category_threshold=options.category_threshold,
    )
    backbone = {
        "name": spec.name,
        "feature_dim": spec.feature_dim,
        "input_size": spec.input_size,
        "weights_sha256": file_sha256(extractor.weights_path),
    }
    trained = {p: catalog[p] for p in head.products}
    return write_model(
        options.out, name=options.name, head=head, catalog=trained, backbone=backbone, extra={"training": report}
    )
