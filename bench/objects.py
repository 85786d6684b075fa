"""Objects (several frames of one part, one decision) against single frames, at the shipped operating point.

    .venv/bin/python -m bench.objects [--datasets parts,fashion,digits] [--known-objects 60] [--unseen-objects 40]
                                      [--parts 100] [--photos 20] [--seed 0] [--tune] [--synthetic 0]
                                      [--frames rendered,resampled] [--workdir DIR]

Each data set gets its own model, trained as `partsight train` trains by default, on 20 photos of each known
product; never-seen products are kept out of it:
- parts: `--parts` drawn look-alike machined parts (models/train/parts.py); never-seen: the next 20 variants,
  siblings of trained parts. An object is one physical part passing the camera: one photo taken on another day,
  then 3 to 8 frames of it, each moved, turned and lit a little differently (a part on a belt). `--frames
  rendered` (the default) draws each frame again with the part moved; `resampled` turns the last frame's picture
  (as the bench did until 2026-12-07: its nearest-neighbour artefacts add up frame after frame);
- fashion: 7 Fashion-MNIST products, the other 3 never seen; an object's frames are different test photos of one
  product (harder than frames of one garment: nothing repeats);
- digits: scikit-learn's digits, 3 and 7 never seen; frames as for fashion.

`--tune` trains each model as `partsight train --tune` does (its defaults; the table says whether its
cross-validation kept the tuned backbone).

Each object's frames go through the model as a worker answers them; their votes are decided with the
service's rule (models.answer.object_rule, PARTSIGHT_OBJECT_AGREE 3, MAX_FRAMES 10): early when three agree,
else at the object's end. Printed per data set: known objects decided right, wrong and unknown, how often their
frames' majority vote is right whatever the evidence, never-seen objects decided unknown, the same figures for
single frames (and how often their top-1 is right), the same of each object's first frame alone (for the parts a
photo as the training's were taken, where the next frames are that photo moved), frames seen when an object is
decided, and the
seconds to a decision for a 10 frames/s camera (without `object_end`: the 700 ms gap closes an object that
never agreed). `--workdir` keeps the photos and models; one found there, made with the same settings, is measured again.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from bench.e2e import records_table
from models.answer.object_rule import FrameVote, ObjectRule, best_answer, early_answer
from models.extract.decode import decode_image
from models.recognizer import Recognizer
from models.train import datasets, parts
from models.train.trainer import TrainOptions, train
from models.train.tuning import TuneOptions
from worker.object_tracker import vote_of
from worker.runtime import object_rule_of

FRAME_S = 0.1  # a 10 frames/s camera
GAP_S = 0.7  # PARTSIGHT_OBJECT_GAP_MS's default
SWEEP_S = 0.1  # worker.objects.SWEEP_EVERY_S


@dataclass
class Stream:
    images: Path  # the training folder
    catalog: Path
    objects: list[tuple[str, bool, list[bytes]]]  # (true product, known, frames)


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def moved(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """`--frames resampled`: the next frame as the last one's picture turned a few degrees (nearest-neighbour, its
    corners filled flat), shifted a few pixels and lit a little differently: what this bench did until 2026-12-07.
    Each frame resamples the one before, so the artefacts add up over an object; no camera makes them."""
    turned = image.rotate(rng.uniform(-6, 6), translate=tuple(rng.integers(-4, 5, 2)), fillcolor=image.getpixel((0, 0)))
    return ImageEnhance.Brightness(turned).enhance(rng.uniform(0.9, 1.1))


def rendered_frames(
    item: parts.Part, k: int, count: int, rng: np.random.Generator, noise: tuple[int, ...]
) -> list[Image.Image]:
    """`--frames rendered`: the part's photo `k` of another day, then `count - 1` frames drawn again from it, each
    turned, moved and lit from the one before by the same steps `moved` draws from `rng` (the same draws in the same
    order: both kinds of stream hold the same objects, each moved by the same steps, though here the part turns about
    itself and stops at the photo's edge, where `moved` turns the whole picture), with the sensor's fresh noise
    (seeded by `noise` and the frame): a part on a belt, as a camera sees it."""
    frames = [parts.photo(item, k, seed=1)]
    degrees, shift, light = 0.0, np.zeros(2, dtype=int), 1.0
    for number in range(1, count):
        degrees += rng.uniform(-6, 6)
        shift += rng.integers(-4, 5, 2)
        light *= rng.uniform(0.9, 1.1)
        nudge = parts.Nudge(
            noise_seed=(*noise, number), degrees=degrees, shift=(int(shift[0]), int(shift[1])), light=light
        )
        frames.append(parts.photo(item, k, seed=1, nudge=nudge))
    return frames


def parts_stream(work: Path, args: argparse.Namespace, rng: np.random.Generator, frames_kind: str) -> Stream:
    images, catalog = work / "images", work / "catalog.json"
    if not images.is_dir():
        drawing = work / "images.drawing"  # renamed into place once whole: a run cut short leaves no half folder
        shutil.rmtree(drawing, ignore_errors=True)
        parts.export_training_folder(drawing, products=args.parts, per_product=args.photos)
        catalog.write_text(json.dumps(list(parts.catalog(args.parts).values())))
        drawing.rename(images)
    objects = []
    for known, count in ((True, args.known_objects), (False, args.unseen_objects)):
        for number in range(count):
            index = int(rng.integers(0, args.parts)) if known else args.parts + number % 20
            item = parts.part(index)
            frames_in_object = int(rng.integers(3, 9))
            if frames_kind == "rendered":
                noise = (args.seed, int(known), number)
                frames = rendered_frames(item, 100 + number, frames_in_object, rng, noise)
            else:
                frames = [parts.photo(item, 100 + number, seed=1)]  # taken on another day
                for _ in range(frames_in_object - 1):
                    frames.append(moved(frames[-1], rng))
            objects.append((item.product, known, [jpeg(frame) for frame in frames]))
    return Stream(images, catalog, objects)


def photo_stream(work: Path, name: str, args: argparse.Namespace, rng: np.random.Generator) -> Stream:
    """fashion or digits: frames of an object are different photos of one product."""
    if name == "fashion":
        train_split, test_split = datasets.load_split("train"), datasets.load_split("test")
        products = [product for product, _, _ in datasets.PRODUCTS]
        category_of = {product: category for product, _, category in datasets.PRODUCTS}
        train_x, train_y, test_x, test_y = train_split.images, train_split.labels, test_split.images, test_split.labels
        unseen = {7, 8, 9}
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        from bench.accuracy import DIGIT_FAMILIES

        bunch = load_digits()
        pictures = (np.round(bunch.images * (255 / 16))).astype(np.uint8)  # ink bright, as Fashion-MNIST's
        train_x, test_x, train_y, test_y = train_test_split(
            pictures, bunch.target, test_size=0.3, stratify=bunch.target, random_state=args.seed
        )
        products = [f"digit-{d}" for d in range(10)]
        category_of = {f"digit-{d}": DIGIT_FAMILIES.get(d, "curved") for d in range(10)}
        unseen = {3, 7}
    images, catalog = work / "images", work / "catalog.json"
    known_labels = [label for label in range(10) if label not in unseen]
    for label in known_labels:
        for index in rng.choice(np.flatnonzero(train_y == label), args.photos, replace=False):
            target = images / category_of[products[label]] / products[label] / f"train-{index:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            datasets.to_photo(train_x[index]).save(target)
    records = [
        {"product": products[label], "name": products[label], "category": category_of[products[label]]}
        for label in known_labels
    ]
    catalog.write_text(json.dumps(records))
    objects = []
    for known, count in ((True, args.known_objects), (False, args.unseen_objects)):
        for _ in range(count):
            label = int(rng.choice(known_labels if known else sorted(unseen)))
            size = int(rng.integers(3, 9))
            picks = rng.choice(np.flatnonzero(test_y == label), size, replace=False)
            objects.append((products[label], known, [jpeg(datasets.to_photo(test_x[i])) for i in picks]))
    return Stream(images, catalog, objects)


def decide(votes: Sequence[FrameVote], rule: ObjectRule) -> tuple[str | None, int, float]:
    """The object's answer as the service gives it, the frames seen when it was decided, and the seconds from its
    first frame to the decision for a FRAME_S camera that never sends `object_end`."""
    for seen in range(1, len(votes) + 1):
        if seen >= rule.max_frames:
            return best_answer(votes[:seen], rule).product, seen, (seen - 1) * FRAME_S
        early = early_answer(votes[:seen], rule)
        if early is not None:
            return early.product, seen, (seen - 1) * FRAME_S
    return best_answer(votes, rule).product, len(votes), (len(votes) - 1) * FRAME_S + GAP_S + SWEEP_S


def majority(votes: Sequence[FrameVote]) -> str | None:
    """The product most frames put first, whatever the evidence (the object's best guess)."""
    products = Counter(vote.product for vote in votes if vote.product is not None)
    return products.most_common(1)[0][0] if products else None  # a tie: the product voted for first


def measure(store: Path, stream: Stream) -> dict[str, Any]:  # long: one pass, every figure counted as it comes
    recognizer = Recognizer.load(store, device="cpu")
    rule = object_rule_of(recognizer.bundle.novelty)
    flat = [frame for _, _, frames in stream.objects for frame in frames]
    batch = np.stack([decode_image(data, size=recognizer.input_size) for data in flat])
    decisions = iter(recognizer.classify(recognizer.features(batch)))
    keys = ("k", "k_right", "k_wrong", "k_guess", "u", "u_unknown", "f", "f_right", "f_wrong", "f_top", "g", "g_ref")
    keys += ("first_right", "first_refused", "first_unseen_refused")  # each object's first frame: a photo as trained
    counts = dict.fromkeys(keys, 0)
    seen_frames, seconds = [], []
    for product, known, frames in stream.objects:
        answers = [next(decisions) for _ in frames]
        votes = [vote_of(str(i), float(i), decision) for i, decision in enumerate(answers)]
        answered, used, took = decide(votes, rule)
        seen_frames.append(used)
        seconds.append(took)
        if known:
            counts["k"] += 1
            counts["k_right"] += answered == product
            counts["k_wrong"] += answered is not None and answered != product
            counts["k_guess"] += majority(votes) == product
            counts["f_top"] += sum(
                bool(decision.top_k) and decision.top_k[0]["product"] == product for decision in answers
            )
            counts["f"] += len(answers)
            counts["f_right"] += sum(decision.product == product for decision in answers)
            counts["f_wrong"] += sum(decision.product not in (None, product) for decision in answers)
            counts["first_right"] += answers[0].product == product
            counts["first_refused"] += answers[0].product is None
        else:
            counts["u"] += 1
            counts["u_unknown"] += answered is None
            counts["g"] += len(answers)
            counts["g_ref"] += sum(decision.product is None for decision in answers)
            counts["first_unseen_refused"] += answers[0].product is None
    return {
        "known objects": counts["k"],
        "objects right": counts["k_right"] / counts["k"],
        "objects wrong": counts["k_wrong"] / counts["k"],
        "objects unknown": 1 - (counts["k_right"] + counts["k_wrong"]) / counts["k"],
        "objects: majority vote right": counts["k_guess"] / counts["k"],
        "never-seen objects unknown": counts["u_unknown"] / max(counts["u"], 1),
        "frames: top-1 right": counts["f_top"] / counts["f"],
        "frames right": counts["f_right"] / counts["f"],
        "frames wrong": counts["f_wrong"] / counts["f"],
        "frames refused": 1 - (counts["f_right"] + counts["f_wrong"]) / counts["f"],
        "never-seen frames refused": counts["g_ref"] / max(counts["g"], 1),
        "first frames right": counts["first_right"] / counts["k"],
        "first frames refused": counts["first_refused"] / counts["k"],
        "never-seen first frames refused": counts["first_unseen_refused"] / max(counts["u"], 1),
        "frames seen to decide (median)": float(np.median(seen_frames)),
        "seconds to decide p50": float(np.median(seconds)),
        "seconds to decide p90": float(np.percentile(seconds, 90)),
        "object thresholds (1, 2, 3, 5 frames)": ", ".join(
            f"{rule.threshold(m):.3f}" for m in (1, 2, 3, 5) if rule.threshold(m) is not None
        ),
    }


SETTINGS = ("parts", "photos", "seed", "tune", "synthetic")  # what a kept model and its photos were made with


def settled_workdir(work: Path, args: argparse.Namespace) -> str | None:
    """Record the settings a data set's photos and model are made with in its folder; what is wrong when the folder
    holds some made with others (None: nothing)."""
    record = work / "bench-args.json"
    settings = {name: getattr(args, name) for name in SETTINGS}
    if record.is_file():
        kept = json.loads(record.read_text())
        return None if kept == settings else f"{work} holds photos and a model made with {kept}, not {settings}"
    if work.exists() and any(work.iterdir()):
        return f"{work} holds files bench.objects did not record its settings for"
    work.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings))
    return None


def trained_row(store: Path, stream: Stream, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Train the data set's model into `store`, or measure the one already there (`reused`)."""
    if (store / "current").exists():
        print(f"{name}: the model in {store} is reused", file=sys.stderr)
        report = json.loads((store / "current" / "report.json").read_text())
        reused = {"tuned": report.get("tuning", {}).get("kept"), "training s": None} if args.tune else {}
        return {"reused": True, **reused}
    started = time.monotonic()
    version = train(
        TrainOptions(
            images=stream.images,
            catalog=stream.catalog,
            out=store,
            show_progress=False,
            tune=TuneOptions() if args.tune else None,
            synthetic_per_image=args.synthetic,
        )
    )
    trained_s = time.monotonic() - started
    report = json.loads((version / "report.json").read_text())
    tuning = report.get("tuning", {})
    if "product_distance" in report:  # whether the novelty score took the product distance, out of fold
        print(json.dumps({"data set": name, "product_distance": report["product_distance"]}), file=sys.stderr)
    if tuning:  # its verdicts: the probe's top-1, the open set's known right at the operating point
        verdicts = {key: tuning.get(key) for key in ("frozen_top1", "tuned_top1", "open_set", "why", "seconds")}
        print(json.dumps({"data set": name, "tuning": verdicts}), file=sys.stderr, flush=True)
    trained = {"tuned": tuning.get("kept"), "training s": round(trained_s)} if args.tune else {}
    return {"reused": False, **trained}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--datasets", default="parts,fashion,digits")
    parser.add_argument("--known-objects", type=int, default=60)
    parser.add_argument("--unseen-objects", type=int, default=40)
    parser.add_argument("--parts", type=int, default=100, help="look-alike parts the parts model knows")
    parser.add_argument("--photos", type=int, default=20, help="training photos per product")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="train as `partsight train --tune` (its defaults)")
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="synthetic copies of each training photo (`partsight train --synthetic`)",
    )
    parser.add_argument(
        "--frames",
        default="rendered",
        help="the parts' frames after the first, comma-separated: rendered (drawn again, moved) and/or resampled "
        "(the last frame's picture turned and shifted, as before 2026-12-07); each measured on the same model",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the photos and trained models here; one made with the same settings is reused",
    )
    args = parser.parse_args()
    kinds = args.frames.split(",")
    if set(kinds) - {"rendered", "resampled"}:
        parser.error(f"--frames: rendered and/or resampled, got {args.frames!r}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="partsight-objects-") as scratch:
        for name in args.datasets.split(","):
            work = (args.workdir or Path(scratch)) / name
            problem = settled_workdir(work, args)
            if problem:
                parser.error(f"--workdir: {problem}; give another folder")
            if name == "parts":
                streams = {kind: parts_stream(work, args, np.random.default_rng(args.seed), kind) for kind in kinds}
            else:
                streams = {"photos": photo_stream(work, name, args, np.random.default_rng(args.seed))}
            store, first = work / "store", next(iter(streams.values()))
            trained = trained_row(store, first, args, name)
            for kind, stream in streams.items():
                rows.append({"data set": name, "frames": kind, **trained, **measure(store, stream)})
                print(json.dumps(rows[-1]), flush=True)
    print(records_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
