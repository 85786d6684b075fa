"""A line on a second data set: Fashion-MNIST, where bench/scale.py measures lines on the look-alike parts.

    .venv/bin/python -m bench.lines [--line 4] [--photos 20] [--test-photos 60] [--workdir DIR]

A model of the first 8 Fashion-MNIST products (`--photos` each, logistic regression), a line of its first `--line`
products, and the 2 products left out as never-seen. Held-out photos (`--test-photos` of each of the line's products
and of the never-seen ones) are answered on the line as a worker answers a device on it (ranked by the line's own
classifier at its own threshold, models.train.line_ranker), by the head alone among the line's products (how lines
were answered before), and by a model trained on the line's products alone: the baselines, in the same run. Prints
top-1, known answered right, known answered wrong and never-seen refused. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.scale import answers, figures, train_child
from models.train import datasets

MODEL_PRODUCTS = 8  # of Fashion-MNIST's 10: the other 2 are never seen


def train_products(folder: Path, products: list[str], photos: int, catalog: Path) -> Path:
    """A store in `folder` trained on `photos` of each of `products` (kept when an earlier run left it)."""
    store = folder / "store"
    if not (store / "current").exists():
        images = folder / "images"
        shutil.rmtree(images, ignore_errors=True)
        datasets.export_training_folder(images, per_class=photos)
        for product_dir in images.glob("*/*"):
            if product_dir.name not in products:
                shutil.rmtree(product_dir)
        train_child(images, catalog, store, "logistic")
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line", type=int, default=4, help="products on the line (of the model's 8)")
    parser.add_argument("--photos", type=int, default=20, help="training photos per product")
    parser.add_argument("--test-photos", type=int, default=60, help="held-out photos per product")
    parser.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    args = parser.parse_args()
    catalog = datasets.catalog()
    products = list(catalog)
    line, unseen = products[: args.line], products[MODEL_PRODUCTS:]
    with tempfile.TemporaryDirectory(prefix="partsight-lines-") as scratch:
        work = Path(args.workdir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        catalog_file = work / "catalog.json"
        catalog_file.write_text(json.dumps(list(catalog.values())))
        model = train_products(work / "model", products[:MODEL_PRODUCTS], args.photos, catalog_file)
        alone = train_products(work / "line-alone", line, args.photos, catalog_file)
        photos = datasets.export_camera_folder(work / "test", per_class=args.test_photos)
        photos = [(path, product) for path, product in photos if product in line or product in unseen]
        truth = [product for _, product in photos]
        categories = {product: str(catalog[product]["category"]) for product in line}
        rows = {
            "ranked by the line's classifier, at its threshold": answers(model, photos, allowed=line),
            "the head alone among the line's products (before)": answers(model, photos, allowed=line, ranked=False),
            f"a model of those {len(line)} alone": answers(alone, photos),
        }
    print(f"\nFashion-MNIST: a line of {len(line)} ({', '.join(line)}) of a model of {MODEL_PRODUCTS}; never seen:")
    print(f"{', '.join(unseen)}; {args.test_photos} held-out photos of each")
    print("| answered by | top-1 | known right | known wrong | never-seen refused |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, decisions in rows.items():
        f = figures(decisions, truth, categories)
        print(
            f"| {label} | {f['top1']:.1%} | {f['known_right']:.1%} | {f['known_wrong']:.1%} "
            f"| {f['unseen_refused']:.1%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
