"""The review queue by look-alikes: how many cards an operator sees, and how often a card mixes two products.

    .venv/bin/python -m bench.review_clusters [--known 40] [--unseen 16] [--frames 10]

Two data sets, each its own model (trained with `partsight train`'s defaults but logistic regression alone):
- parts: `--known` drawn look-alike parts (models/train/parts.py, 12 photos each); the queue gets frames of
  `--unseen` never-seen parts, the variants that follow the catalog (siblings of trained parts, so look-alikes),
  `--frames` photos of each taken on another day, and 3 such photos of every known part;
- fashion: 7 Fashion-MNIST products (20 photos each); the queue gets test photos of the 3 others (`--frames` of
  each: different garments of one product) and 3 of every known product.
Frames go through the model as a worker answers them; those a worker keeps for review (unknown, or a near tie:
worker.review_sink.worth_review) become items with their features, and api.review_clusters groups them.

Per data set: items, cards (clusters) against one card per item, cards per never-seen product (1 is ideal), items
in a card whose majority product is their own (purity), cards mixing two products, and cards whose best guess is
their majority product. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from api.review_clusters import clusters
from bench.e2e import records_table
from models.answer.same_product import same_product_similarity
from models.extract.decode import decode_image
from models.recognizer import Recognizer
from models.train import datasets, parts
from models.train.trainer import TrainOptions, train
from worker.review_sink import FrameFeatures, worth_review

MARGIN = 0.1  # PARTSIGHT_REVIEW_MARGIN's default


def parts_set(work: Path, known: int, unseen: int, frames: int) -> tuple[Path, Path, list[tuple[bytes, str]]]:
    images, catalog = work / "images", work / "catalog.json"
    parts.export_training_folder(images, products=known, per_product=12)
    catalog.write_text(json.dumps(list(parts.catalog(known).values())))
    stream = parts.export_camera_folder(work / "known", products=known, per_product=3)
    stream += parts.export_camera_folder(work / "unseen", products=unseen, per_product=frames, start=known)
    return images, catalog, [(path.read_bytes(), product) for path, product in stream]


def fashion_set(work: Path, frames: int) -> tuple[Path, Path, list[tuple[bytes, str]]]:
    known_labels = tuple(range(7))
    train_split, test_split = datasets.load_split("train"), datasets.load_split("test")
    images, catalog = work / "images", work / "catalog.json"
    for index in datasets.pick_per_class(train_split, 20, seed=0, labels=known_labels):
        product, _, category = datasets.PRODUCTS[int(train_split.labels[index])]
        target = images / category / product / f"train-{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        datasets.to_photo(train_split.images[index]).save(target)
    records = datasets.catalog()
    catalog.write_text(json.dumps([records[datasets.PRODUCTS[label][0]] for label in known_labels]))
    stream = []
    for label in range(10):
        count = 3 if label in known_labels else frames
        for index in datasets.pick_per_class(test_split, count, seed=1, labels=(label,)):
            photo = work / "stream.jpg"
            datasets.to_photo(test_split.images[index]).save(photo, quality=90)
            stream.append((photo.read_bytes(), datasets.PRODUCTS[label][0]))
    return images, catalog, stream


def queue_items(store: Path, stream: Sequence[tuple[bytes, str]]) -> tuple[list[dict[str, Any]], list[str], float]:
    """The review items a worker keeps from `stream`, their true products, and the version's similarity."""
    recognizer = Recognizer.load(store, device="cpu")
    gallery = recognizer.bundle.gallery
    assert gallery is not None
    similarity = same_product_similarity(gallery.features, gallery.labels)
    batch = np.stack([decode_image(data, size=recognizer.input_size) for data, _ in stream])
    features = recognizer.features(batch)
    decisions = recognizer.classify(features)
    items, truth = [], []
    for number, ((_, product), vector, decision) in enumerate(zip(stream, features, decisions, strict=True)):
        answer = {"status": decision.status, "product": decision.product, "top_k": decision.top_k}
        if not worth_review(answer, MARGIN):
            continue
        record = FrameFeatures(recognizer.bundle.feature_space, vector, lambda: similarity).record()
        items.append({"id": f"item-{number:05d}", "frame_id": str(number), "device": "cam", "answer": answer})
        items[-1]["features"] = record
        truth.append(product)
    return items, truth, float(similarity) if similarity is not None else float("nan")


def figures(items: list[dict[str, Any]], truth: list[str], known: set[str]) -> dict[str, Any]:
    product_of = {item["id"]: product for item, product in zip(items, truth, strict=True)}
    found = clusters(items)
    pure = mixed = guessed = guessable = 0
    cards_of: dict[str, set[str]] = {}
    for cluster in found:
        products = Counter(product_of[item] for item in cluster["items"])
        majority, count = products.most_common(1)[0]
        pure += count
        mixed += len(products) > 1
        for product in products:
            cards_of.setdefault(product, set()).add(cluster["id"])
        if majority in known:
            guessable += 1
            guessed += bool(cluster["best_guess"]) and cluster["best_guess"]["product"] == majority
    unseen = [product for product in cards_of if product not in known]
    return {
        "items": len(items),
        "unseen items": sum(product not in known for product in truth),
        "cards": len(found),
        "cards per unseen product": float(np.mean([len(cards_of[p]) for p in unseen])) if unseen else float("nan"),
        "purity": pure / max(len(items), 1),
        "mixed cards": mixed,
        "best guess right": f"{guessed}/{guessable}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--known", type=int, default=40, help="parts the parts model is trained on")
    parser.add_argument("--unseen", type=int, default=16, help="never-seen parts in the queue")
    parser.add_argument("--frames", type=int, default=10, help="frames of each never-seen product")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="partsight-review-clusters-") as scratch:
        for name in ("parts", "fashion"):
            work = Path(scratch) / name
            made = (
                parts_set(work, args.known, args.unseen, args.frames)
                if name == "parts"
                else fashion_set(work, args.frames)
            )
            images, catalog, stream = made
            store = work / "store"
            train(
                TrainOptions(images=images, catalog=catalog, out=store, show_progress=False, classifiers=("logistic",))
            )
            known = {str(record["product"]) for record in json.loads(catalog.read_text())}
            items, truth, similarity = queue_items(store, stream)
            rows.append({"data set": name, "same-product similarity": similarity, **figures(items, truth, known)})
    print(records_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
