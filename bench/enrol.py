"""Enrolment: seconds from the request to the first frame answered with the new product, and how the enrolled
model compares with a full retrain on the same photos.

    .venv/bin/python -m bench.enrol [--products 10] [--photos 20] [--test-per-class 30] [--reverse]

The base model is trained (full search) on 8 Fashion-MNIST products, 20 photos each; two more Fashion-MNIST
products are kept out as never-seen. Then 10 new products (scikit-learn's handwritten digits, 20 photos each)
are enrolled one after the other through the real path: the request is stored and the `partsight.enrol` task
sent as the API does (EnrolmentStore + Celery), a real worker runs it beside the frames' queue, and a camera
keeps sending frames of that product over Mosquitto and the bridge until one comes back answered with it.
`--reverse` swaps the data sets (base on digits, Fashion-MNIST products enrolled), to confirm on a second.

Enrolments are quick (a refinement on the head: models.train.quick_enrolment); their consolidation is held back
while they run, then the worker is sent `partsight.consolidate` and folds all of them in while the camera goes on.
Frames are timed from publish to answer: quiet (before any enrolment), during the enrolments, during the
consolidation; the p99 of each beside the quiet one's.

The comparison: the quick version (every enrolment a refinement), the consolidated one, and `partsight train`
(full search) on the same photos, on held-out photos: accuracy on the enrolled products, on the base products,
and the share of never-seen products refused. Prints three tables.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from partsight.testing.harness import Listener, frame_properties, publisher, wait_for
from partsight.testing.servers import mosquitto, redis_server
from partsight.testing.stack import make_stack

if TYPE_CHECKING:
    from models.extract.recipe import FeatureRecipe


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def fashion_sets(per_class: int, test_per_class: int) -> dict[str, tuple[dict[str, str], list[bytes], list[bytes]]]:
    """product -> (catalog record, training photos, held-out photos) from Debian's Fashion-MNIST."""
    from models.train import datasets

    catalog = datasets.catalog()
    train, test = datasets.load_split("train"), datasets.load_split("test")
    out = {}
    for label, (product, _, _) in enumerate(datasets.PRODUCTS):
        rows = np.flatnonzero(train.labels == label)[:per_class]
        held = np.flatnonzero(test.labels == label)[:test_per_class]
        photos = [png(np.asarray(datasets.to_photo(train.images[i]))) for i in rows]
        tests = [png(np.asarray(datasets.to_photo(test.images[i]))) for i in held]
        out[product] = (dict(catalog[product]), photos, tests)
    return out


def digit_sets(per_class: int, test_per_class: int) -> dict[str, tuple[dict[str, str], list[bytes], list[bytes]]]:
    """product -> (record, training photos, held-out photos) from scikit-learn's digits, as 112 px photos."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = {}
    for digit in range(10):
        rows = np.flatnonzero(digits.target == digit)
        photos = []
        for row in rows[: per_class + test_per_class]:
            pixels = (255 - digits.images[row] * 16).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((112, 112), Image.Resampling.BILINEAR).convert("RGB")
            photos.append(png(np.asarray(image)))
        record = {"product": f"gauge-{digit}", "name": f"Gauge dial {digit}", "category": f"dials-{digit % 3}"}
        out[record["product"]] = (record, photos[:per_class], photos[per_class:])
    return out


def write_folder(root: Path, sets: dict[str, tuple[dict[str, str], list[bytes], list[bytes]]]) -> Path:
    for product, (record, photos, _) in sets.items():
        folder = root / "images" / record["category"] / product
        folder.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(photos):
            (folder / f"{index:03d}.png").write_bytes(data)
    catalog = root / "catalog.json"
    catalog.write_text(json.dumps([record for record, _, _ in sets.values()]))
    return catalog


def train_store(
    root: Path, sets: dict[str, tuple[dict[str, str], list[bytes], list[bytes]]], recipe: FeatureRecipe | None = None
) -> tuple[Path, float]:
    """`partsight train` (full search) on `sets`; `recipe` pins the feature recipe (default: cross-validation
    chooses among the candidates)."""
    from models.train.trainer import TrainOptions, train

    catalog = write_folder(root, sets)
    started = time.monotonic()
    options = TrainOptions(images=root / "images", catalog=catalog, out=root / "store", show_progress=False)
    train(options if recipe is None else replace(options, recipes=(recipe,)))
    return root / "store", time.monotonic() - started


def evaluate(store: Path, tests: dict[str, list[bytes]], unseen: dict[str, list[bytes]]) -> dict[str, float]:
    """Accuracy on `tests` (an answer of unknown counts as wrong), top-1 (the best guess, answered or not), and the
    share of never-seen photos answered unknown."""
    from models.extract.decode import DecodeLimits
    from models.recognizer import Recognizer

    recognizer = Recognizer.load(store, device="cpu")

    def answers(photos: list[bytes]) -> list[tuple[str | None, str | None]]:
        """(the answer, None for unknown; the best guess) of each photo."""
        images = np.stack([recognizer.engine.prepare(data, DecodeLimits()) for data in photos])
        return [
            (d.product if d.status == "recognized" else None, d.top_k[0]["product"] if d.top_k else None)
            for d in recognizer.classify(recognizer.features(images))
        ]

    known = [(product, answer) for product, photos in tests.items() for answer in answers(photos)]
    refused = [answer is None for photos in unseen.values() for answer, _ in answers(photos)]
    return {
        "accuracy": float(np.mean([answer == product for product, (answer, _) in known])),
        "top1": float(np.mean([best == product for product, (_, best) in known])),
        "unseen_refused": float(np.mean(refused)) if refused else float("nan"),
    }


def finished(requests: Any, enrolment: str) -> dict[str, Any] | None:
    status: dict[str, Any] = requests.get(enrolment)
    return status if status["state"] in ("done", "failed") else None


def consolidate_while_streaming(app: Any, store: Path, camera: Camera, photos: list[bytes]) -> float:
    """Send the worker `partsight.consolidate` and stream frames until current has no refinement left; seconds."""
    from broker.contract import CONSOLIDATE_TASK, ENROL_QUEUE
    from models.train.consolidation import refinements_of

    started = time.time()
    app.send_task(CONSOLIDATE_TASK, queue=ENROL_QUEUE)
    frame = 0
    while refinements_of(store) and time.time() - started < 1800:
        camera.send(f"c-{frame}", photos[frame % len(photos)])
        frame += 1
    return time.time() - started


def first_answered(listener: Listener, prefix: str, product: str, since: float) -> float | None:
    """Seconds from `since` to the first answer to a frame id starting with `prefix` that names `product`."""
    messages, arrivals = list(listener.messages), list(listener.arrivals)  # appended together, index-aligned
    for (_, body, _), (at, _, _) in zip(messages, arrivals, strict=False):
        if str(body.get("frame_id", "")).startswith(prefix) and body.get("product") == product:
            return at - since
    return None


class Camera:
    """Probe frames of one device, each publish time kept by frame id."""

    def __init__(self, stack: Any, listener: Listener, client: Any, interval_s: float) -> None:
        self.stack, self.listener, self.client, self.interval_s = stack, listener, client, interval_s
        self.sent: dict[str, float] = {}

    def send(self, frame_id: str, data: bytes) -> None:
        self.sent[frame_id] = time.time()
        self.client.publish(self.stack.topics.frame("bench-cam"), data, qos=1, properties=frame_properties(frame_id))
        time.sleep(self.interval_s)

    def latencies_ms(self, prefix: str) -> list[float]:
        """Milliseconds from publish to answer of every answered frame whose id starts with `prefix`."""
        out = []
        for at, _, frame_id in list(self.listener.arrivals):
            if frame_id is not None and frame_id.startswith(prefix) and frame_id in self.sent:
                out.append(1000 * (at - self.sent[frame_id]))
        return out


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=10, help="new products to enrol")
    parser.add_argument("--photos", type=int, default=20, help="photos of each, enrolled in one request")
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--frame-interval", type=float, default=0.1, help="seconds between probe frames")
    parser.add_argument("--reverse", action="store_true", help="base on the digits, enrol Fashion-MNIST products")
    parser.add_argument("--skip-retrain", action="store_true", help="timings only")
    args = parser.parse_args()

    from broker.contract import ENROL_QUEUE, ENROL_TASK
    from broker.dispatch import producer_app
    from models.store.enrolment_requests import EnrolmentStore

    work = Path(tempfile.mkdtemp(prefix="partsight-bench-enrol-"))
    fashion = fashion_sets(20, args.test_per_class)
    digits = digit_sets(args.photos, args.test_per_class)
    known, new = (digits, fashion) if args.reverse else (fashion, digits)
    names = sorted(known)
    unseen_names = names[-2:] if not args.reverse else []
    base = {p: known[p] for p in names if p not in unseen_names}
    if args.reverse:  # the digits are the base: two of them are kept out as never-seen
        unseen_names = sorted(base)[-2:]
        base = {p: v for p, v in base.items() if p not in unseen_names}
    enrolled = dict(list(new.items())[: args.products])
    print(f"base: {len(base)} products; enrolling {len(enrolled)} x {args.photos} photos; never-seen: {unseen_names}")
    store, base_seconds = train_store(work / "base", base)
    print(f"base model trained (full search) in {base_seconds:.0f} s")

    mqtt_server, redis = mosquitto(work / "mosquitto"), redis_server(work / "redis")
    mqtt_server.start()
    redis.start()
    stack = make_stack(
        mqtt_server, redis, store, work / "logs", PARTSIGHT_MODEL_RELOAD_S="60", PARTSIGHT_CONSOLIDATE_AFTER_S="86400"
    )
    rows = []
    quiet = [data for _, (_, _, tests) in list(base.items())[:4] for data in tests[:10]]
    try:
        stack.start()
        app = producer_app("bench-enrol", stack.env["PARTSIGHT_REDIS_URL"], 60)
        requests = EnrolmentStore(store)
        client = publisher("127.0.0.1", stack.mqtt_port)
        with Listener("127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/bench-cam/result"]) as listener:
            camera = Camera(stack, listener, client, args.frame_interval)
            for frame, data in enumerate(quiet):  # frames with nothing else going on: the latency to compare with
                camera.send(f"quiet-{frame}", data)
            for index, (product, (record, photos, tests)) in enumerate(enrolled.items()):
                started = time.time()
                enrolment = requests.create(
                    product, [(f"{i:03d}.png", p) for i, p in enumerate(photos)], record=record, source="bench"
                )
                app.send_task(ENROL_TASK, kwargs={"enrolment": enrolment}, queue=ENROL_QUEUE)
                frame = 0
                first = None
                while first is None and time.time() - started < 120:
                    camera.send(f"p{index}-f{frame}", tests[frame % len(tests)])
                    frame += 1
                    first = first_answered(listener, f"p{index}-", product, started)
                status = wait_for(lambda e=enrolment: finished(requests, e), 120, "enrolment finished")
                rows.append((product, first, status["seconds"], status["state"], frame))
                print(
                    f"  {product}: first frame answered with it after {first if first is None else round(first, 2)} s "
                    f"(enrolment {status['seconds']} s, {status['state']}, {frame} probe frames)"
                )
            quick_store = work / "quick"
            subprocess.run(["cp", "-a", str(store), str(quick_store)], check=True)  # the quick version, as it was
            consolidation_s = consolidate_while_streaming(app, store, camera, quiet)
            time.sleep(3)  # the last frames' answers
        client.disconnect()
    finally:
        stack.stop()
        redis.stop()
        mqtt_server.stop()
    log = stack.worker.log().splitlines() if stack.worker else []
    stages = [line.split("models.train.enrolment: ", 1)[-1] for line in log if "models.train.enrolment:" in line]
    print("\nwhere each enrolment's time went (worker log):")
    for line in stages:
        print("  " + line)

    firsts = [r[1] for r in rows if r[1] is not None]
    own = [float(r[2]) for r in rows if r[2] is not None]
    print()
    print(
        "| products enrolled | photos each | request -> first frame answered, median (s) | max (s) | "
        "enrolment itself, median (s) | max (s) | target |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(rows)} | {args.photos} | {statistics.median(firsts):.2f} | {max(firsts):.2f} | "
        f"{statistics.median(own):.2f} | {max(own):.2f} | <= 15 s |"
        if firsts
        else "| no enrolled product was ever answered |"
    )
    print()
    print("| frames (publish -> answer) | frames | p50 ms | p99 ms | p99 / quiet p99 | target |")
    print("|---|---|---|---|---|---|")
    quiet_p99 = p99(camera.latencies_ms("quiet-"))
    for label, prefix in (("quiet", "quiet-"), ("during the enrolments", "p"), ("during the consolidation", "c-")):
        values = camera.latencies_ms(prefix)
        print(
            f"| {label} | {len(values)} | {np.median(values) if values else float('nan'):.0f} | {p99(values):.0f} | "
            f"{p99(values) / quiet_p99:.2f} | {'' if prefix == 'quiet-' else '<= 1.5'} |"
        )
    print(f"consolidation of {len(rows)} quick enrolments: {consolidation_s:.1f} s (a child process of the worker)")
    if args.skip_retrain:
        return 0
    tests_base = {p: v[2] for p, v in base.items()}
    tests_new = {p: v[2] for p, v in enrolled.items()}
    unseen = {p: known[p][2] for p in unseen_names}
    quick_eval = {
        "new": evaluate(quick_store, tests_new, unseen),
        "base": evaluate(quick_store, tests_base, unseen),
    }
    enrolled_eval = {
        "new": evaluate(store, tests_new, unseen),
        "base": evaluate(store, tests_base, unseen),
    }
    retrain_store, retrain_seconds = train_store(work / "retrain", {**base, **enrolled})
    retrained_eval = {
        "new": evaluate(retrain_store, tests_new, unseen),
        "base": evaluate(retrain_store, tests_base, unseen),
    }
    print()
    print("| model | built in (s) | enrolled products right | base products right | never-seen refused |")
    print("|---|---|---|---|---|")
    total_enrol = sum(own)
    for label, seconds, result in (
        (f"{len(rows)} quick enrolments on the base", total_enrol, quick_eval),
        ("the same, consolidated", total_enrol + consolidation_s, enrolled_eval),
        ("full retrain (search) on the same photos", retrain_seconds, retrained_eval),
    ):
        print(
            f"| {label} | {seconds:.0f} | {100 * result['new']['accuracy']:.1f}% | "
            f"{100 * result['base']['accuracy']:.1f}% | {100 * result['new']['unseen_refused']:.1f}% |"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
