"""From ten products to thousands: what training, an enrolment and the store cost as the catalog grows.

    .venv/bin/python -m bench.scale [--sizes 10,100] [--photos 20] [--enrolments 3] [--classifiers logistic]

For each catalog size N: N drawn look-alike parts (models/train/parts.py, `photos` each) are trained into a new
store with `partsight train` in a child process (seconds and the child's peak memory), then `enrolments` new
parts of `photos` each are enrolled one after the other through the enrolment path the command line and the
workers use (a stored request, run_request, the version's own ONNX engine in this process; the refit, the
write, the prune after each version). Per enrolment: seconds from the request to its outcome (the look-alike
check and the prune included), to `current` moving (served), and to the first frame answered by the version (as
a worker does when current moves: the version loaded, the recognizer kept for the next enrolment's features as
a worker's served model is, one of the part's photos answered; the issue's "request to first recognised"), the
bytes the store grew on disk (each shared file counted once), and, as the baseline measured in the
same run, the bytes the same version takes as a self-contained folder (every file but the hard-linked ONNX graph:
what a version cost before versions shared content). `--reuse` trains again on the photos and feature cache that
an earlier run left in `--workdir` (its training seconds are then not a first training's); `--enrolments-only`
enrols new parts on the stores an earlier run left there and prints the enrolment table alone; with
`--consolidate-behind` a consolidation runs beside them as a worker runs it (worker.consolidator's child process,
started again whenever current holds refinements), so that hundreds of enrolments in a row (`--enrolments 1000`)
meet what a plant enrolling its catalog would: the store after them, whether an enrolment costs more once hundreds
came before it, how many found the head's refinements full (MAX_REFINEMENTS) and refitted every node, and how many
waited (tried again each second; a worker's task comes back every 2 s) for a running consolidation to make room.

Accuracy at the shipped operating point, on photos taken on another day (another seed): `--test-photos` of each
of up to 100 of the trained parts and of 20 never-seen look-alikes (the parts after the catalog's): top-1 (the
best product is the right one, whatever the threshold), known answered right, known category right, macro-F1 and
never-seen refused. Then a line of `--line` of those parts: the same photos of its parts and the never-seen ones
answered on the line as a worker answers a device on it (among its parts, ranked by the line's own classifier at
the line's own novelty threshold, models.train.line_ranker), beside the head alone among its parts (how lines
were answered before) and a model trained on those parts alone, the baselines measured in the same run.
`--accuracy-only` measures only this, on the stores an earlier run left in --workdir.

`--classifiers` defaults to logistic regression alone: the full classifier search does not finish at 100 parts
on a 2-core box (issue 19 section 6). Prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.errors import StoreBusy
from models.store.blobs import store_bytes
from models.store.enrolment_requests import DONE, EnrolmentStore
from models.store.versions import MANIFEST, current_version, version_folders
from models.train import parts
from models.train.consolidation import consolidate_all
from models.train.enrolment_runs import RequestOutcome, run_request
from partsight.enrol_cli import LocalFeatures

ROOT = Path(__file__).resolve().parent.parent
MAX_WAIT_S = 3600.0  # an enrolment the store keeps turning away this long stops the run
LINKED = ("backbone.onnx",)  # hard-linked by every enrolment, before shared content too


def train_child(images: Path, catalog: Path, store: Path, classifiers: str) -> tuple[float, float]:
    """`partsight train` in a child process: its seconds and peak resident memory in MiB."""
    command = [sys.executable, "-m", "partsight.cli", "--log-level", "warning", "train", "--images", str(images)]
    command += ["--catalog", str(catalog), "--out", str(store), "--quiet", "--classifiers", classifiers]
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"partsight train failed at {images} (exit {child.returncode})")
    return time.monotonic() - started, usage.ru_maxrss / 1024


def self_contained_bytes(version: Path) -> int:
    """The bytes of a version's files as its own copies (the ONNX graph left out: it was linked before too)."""
    files = json.loads((version / MANIFEST).read_text())["files"]
    return (
        sum(int(record["bytes"]) for name, record in files.items() if name not in LINKED)
        + (version / MANIFEST).stat().st_size
    )


def progress(message: str) -> None:
    """A line on stderr as the run goes (the table comes at the end)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def feature_dim(version: Path) -> int:
    return int(json.loads((version / MANIFEST).read_text())["backbone"]["feature_dim"])


def enrol_parts(store: Path, first: int, count: int, photos: int, work: Path) -> list[dict[str, Any]]:
    """Enrol parts first..first+count-1 one after the other, the native thread pools limited as a worker's with
    its default lane (PARTSIGHT_LANE_THREADS=1); one row of figures each."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _enrol_parts(store, first, count, photos, work)


def _enrol_parts(store: Path, first: int, count: int, photos: int, work: Path) -> list[dict[str, Any]]:
    features = LocalFeatures("cpu", None)
    features.load(store / str(current_version(store)))  # served already, as by a worker: not an enrolment's cost
    requests = EnrolmentStore(store)
    catalog = parts.catalog(first + count)
    rows = []
    for item in parts.parts(count, start=first):
        folder = work / item.product
        paths = parts.export_camera_folder(folder, products=1, per_product=photos, seed=0, start=item.index)
        pictures = [(path.name, path.read_bytes()) for path, _ in paths]
        before = store_bytes(store)
        started, asked = time.monotonic(), time.time()
        enrolment = requests.create(item.product, pictures, record=catalog[item.product], source="bench")
        answered: list[tuple[float, bool]] = []
        frame_of = (pictures[0][1], item.product)
        serve = functools.partial(answer_once_served, answered, features, store, frame_of, started)
        outcome, waited = run_waiting(store, enrolment, features, serve)
        seconds = time.monotonic() - started
        served = os.lstat(store / "current").st_mtime - asked  # `current` moved: what a worker reloads on
        if outcome.state != DONE or outcome.version is None or not answered:
            raise SystemExit(f"enrolment of {item.product} failed: {outcome.error}")
        assert outcome.enrolled is not None
        steps = ", ".join(f"{k} {v:.2f}" for k, v in outcome.enrolled.timings.items())
        progress(
            f"enrolled {item.product} in {seconds:.2f} s, served after {served:.2f} s, a frame answered after "
            f"{answered[0][0]:.2f} s (top-1 {'the part' if answered[0][1] else 'another'}; {steps}"
            f"{f'; waited {waited:.0f} s for a consolidation' if waited else ''})"
        )
        rows.append(
            {
                "seconds": seconds,
                "served_s": served,
                "answered_s": answered[0][0],
                "refit_s": outcome.enrolled.timings.get("refit_s", outcome.enrolled.timings.get("refine_s", 0.0)),
                "grown": store_bytes(store) - before,  # the request's photos (kept for review) included
                "self_contained": self_contained_bytes(store / outcome.version),
                "own_features": photos * feature_dim(store / outcome.version) * 2,  # float16
                "quick": "refine_s" in outcome.enrolled.timings,  # otherwise every node was refitted
                "waited_s": waited,
            }
        )
    return rows


def run_waiting(
    store: Path, enrolment: str, features: LocalFeatures, serve: Callable[[str], None]
) -> tuple[RequestOutcome, float]:
    """run_request as a worker's task runs it, tried again while the store says to (StoreBusy: the head full of
    quick enrolments a running consolidation folds in), each second (a worker's task: every 2 s); the outcome and
    the seconds spent waiting."""
    waited = 0.0
    while True:
        try:
            return run_request(
                store, enrolment, features, keep_versions=20, on_served=serve, loaded=features.loaded
            ), waited
        except StoreBusy as exc:
            if waited >= MAX_WAIT_S:  # a round takes 10-25 minutes at hundreds of parts; a stuck lock, longer
                raise SystemExit(f"the store turned enrolment {enrolment} away for {waited:.0f} s: {exc}") from exc
            time.sleep(1.0)
            waited += 1.0


class ConsolidationBehind:
    """What a worker does after each quick enrolment, in a thread beside the enrolments: the consolidation's child
    process (worker.consolidator: `partsight models --consolidate`, niced, one BLAS thread) started again as soon as
    the last one ended while current holds refinements. Counts the consolidations and their seconds, and keeps each
    child's log in `consolidations.log` beside the store (each round's kind, seconds and re-centring, to set beside
    the enrolments that waited)."""

    def __init__(self, store: Path) -> None:
        from worker.consolidator import Consolidator

        self._consolidator = Consolidator(
            store, keep_versions=20, reload_now=lambda: None, announce=lambda v, r: None, run=self._child
        )
        self._log = store.parent / "consolidations.log"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="consolidation-behind", daemon=True)
        self.runs: list[tuple[str, float]] = []

    def __enter__(self) -> ConsolidationBehind:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _child(self, command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        """subprocess.run as the worker calls it, but stopped (SIGTERM) once the enrolments are done: a round at
        hundreds of parts outlasts them by minutes."""
        options.pop("check", None)
        options.pop("timeout", None)
        options.pop("capture_output", None)
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)
        while True:
            try:
                out, err = child.communicate(timeout=1.0)  # its output read as it comes: a full pipe never stalls it
                with self._log.open("a", encoding="utf-8") as log:
                    log.write(err if isinstance(err, str) else err.decode(errors="replace"))
                return subprocess.CompletedProcess(command, child.returncode, out, err)
            except subprocess.TimeoutExpired:
                if self._stop.is_set():
                    child.terminate()

    def _loop(self) -> None:
        from worker.consolidator import DONE, FAILED

        while not self._stop.is_set():
            outcome, seconds = self._consolidator.consolidate()
            if outcome == FAILED and self._stop.is_set():
                progress(f"consolidation stopped after {seconds:.0f} s: the enrolments are done")
            elif outcome in {DONE, FAILED}:
                self.runs.append((outcome, seconds))
                progress(f"consolidation {outcome} in {seconds:.0f} s")
            else:
                self._stop.wait(1.0)


def answer_once_served(
    answered: list[tuple[float, bool]],
    features: LocalFeatures,
    store: Path,
    frame_of: tuple[bytes, str],
    started: float,
    version: str,
) -> None:
    """What a worker does the moment `current` names `version`: load it, then answer a frame (`frame_of`: one of
    the enrolled photos and its part). Appends the seconds since `started` and whether the best product is the part."""
    from models.extract.decode import DecodeLimits

    recognizer = features.load(store / version)  # kept: the next enrolment's features, as a worker's served model
    frame, product = frame_of
    image = recognizer.engine.prepare(frame, DecodeLimits())
    decision = recognizer.classify(recognizer.features(image[None]))[0]
    best = decision.top_k[0]["product"] if decision.top_k else None
    answered.append((time.monotonic() - started, best == product))


def train_parts(
    folder: Path, size: int, photos: int, classifiers: str, first: int = 0, reuse: bool = False
) -> tuple[Path, float, float]:
    """`size` parts from `first` trained into `folder/store`: the store, seconds and peak MiB. `reuse`: the photos
    and the feature cache an earlier run left in `folder` are used again (its training seconds are not a first
    training's)."""
    images, catalog_file, store = folder / "images", folder / "catalog.json", folder / "store"
    if not (reuse and images.is_dir()):
        parts.export_training_folder(images, products=size, per_product=photos, start=first)
    catalog_file.parent.mkdir(parents=True, exist_ok=True)
    records = parts.catalog(first + size)  # once: built per part it cost 10 minutes at 10,000 parts
    catalog_file.write_text(json.dumps([records[item.product] for item in parts.parts(size, start=first)]))
    seconds, peak = train_child(images, catalog_file, store, classifiers)
    return store, seconds, peak


def answers(
    store: Path, photos: list[tuple[Path, str]], allowed: list[str] | None = None, *, ranked: bool = True
) -> list[Any]:
    """The decisions of the store's current version for `photos`, as a worker makes them: on a line (`allowed`),
    among its products and, with `ranked`, ranked by the line's own classifier (models.train.line_ranker)."""
    import numpy as np

    from models.answer.line_scope import line_scope
    from models.extract.decode import DecodeLimits
    from models.recognizer import Recognizer
    from models.train.line_ranker import fit_line_ranker

    recognizer = Recognizer.load(store, device="cpu")
    products = recognizer.answerer.head.products
    scope = None
    if allowed is not None:
        mask = np.isin(np.asarray(products), allowed)
        ranker = fit_line_ranker(recognizer.bundle, allowed) if ranked else None
        scope = line_scope(products, mask, *((ranker.classifier, ranker.novelty_threshold) if ranker else ()))
    decisions = []
    for start in range(0, len(photos), 32):
        batch = photos[start : start + 32]
        images = np.stack([recognizer.engine.prepare(path.read_bytes(), DecodeLimits()) for path, _ in batch])
        features = recognizer.features(images)
        decisions += recognizer.classify(features, allowed=None if scope is None else [scope] * len(batch))
    return decisions


def figures(decisions: list[Any], truth: list[str], categories: dict[str, str]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    known = [i for i, product in enumerate(truth) if product in categories]
    unseen = [i for i, product in enumerate(truth) if product not in categories]
    top1 = [decisions[i].top_k[0]["product"] if decisions[i].top_k else None for i in known]
    named = [decisions[i].product or "unknown" for i in known]
    return {
        "top1": sum(t == truth[i] for t, i in zip(top1, known, strict=True)) / len(known),
        "known_right": sum(n == truth[i] for n, i in zip(named, known, strict=True)) / len(known),
        "known_wrong": sum(n not in ("unknown", truth[i]) for n, i in zip(named, known, strict=True)) / len(known),
        "category": sum(decisions[i].category == categories[truth[i]] for i in known) / len(known),
        "macro_f1": float(
            f1_score([truth[i] for i in known], named, average="macro", labels=sorted(set(truth[i] for i in known)))
        ),
        "unseen_refused": sum(decisions[i].status == "unknown" for i in unseen) / len(unseen)
        if unseen
        else float("nan"),
    }


def measure(size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    folder = work / f"n{size}"
    store, train_s, peak_mib = train_parts(folder, size, args.photos, args.classifiers, reuse=args.reuse)
    progress(f"{size} parts trained in {train_s:.0f} s, peak {peak_mib:.0f} MiB")
    accuracy = accuracy_figures(size, args, work)
    categories = {p: str(r["category"]) for p, r in parts.catalog(size).items()}
    first_new = size + 1000 + 20
    enrolled = enrol_parts(store, first_new, args.enrolments, args.photos, folder / "new")
    new_photos = parts.export_camera_folder(
        folder / "new-test", products=args.enrolments, per_product=args.test_photos, start=first_new
    )
    new_categories = {
        **categories,
        **{p: str(r["category"]) for p, r in parts.catalog(first_new + args.enrolments).items()},
    }
    new_truth = [product for _, product in new_photos]
    quick = figures(answers(store, new_photos), new_truth, new_categories)
    started = time.monotonic()
    consolidate_all(store, keep_versions=20)
    consolidation_s = time.monotonic() - started
    progress(f"{size} parts: consolidated in {consolidation_s:.0f} s")
    consolidated = figures(answers(store, new_photos), new_truth, new_categories)
    return {
        "quick_top1": quick["top1"],
        "quick_known_right": quick["known_right"],
        "consolidated_top1": consolidated["top1"],
        "consolidated_known_right": consolidated["known_right"],
        "consolidation_s": consolidation_s,
        **accuracy,
        "size": size,
        "train_s": train_s,
        "peak_mib": peak_mib,
        **enrolment_figures(enrolled, store),
    }


def accuracy_figures(size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Top-1, known right, category, macro-F1 and never-seen refused of the store in `work`/n`size` on another
    day's photos; the same on a line of its first `args.line` parts (never-seen parts included), ranked by the
    line's own classifier and by the head alone, against a model trained on those parts alone (trained here; with
    --accuracy-only, the one an earlier run left when there is one)."""
    folder = work / f"n{size}"
    store = folder / "store"
    camera = parts.export_camera_folder(folder / "test", products=min(size, 100), per_product=args.test_photos)
    camera += parts.export_camera_folder(
        folder / "unseen", products=20, per_product=args.test_photos, start=size + 1000
    )
    categories = {p: str(r["category"]) for p, r in parts.catalog(size).items()}
    overall = figures(answers(store, camera), [product for _, product in camera], categories)
    line = [item.product for item in parts.parts(min(args.line, size))]
    on_line = [(path, product) for path, product in camera if product in line or product not in categories]
    line_truth = [product for _, product in on_line]
    line_categories = {p: categories[p] for p in line}
    ranked = figures(answers(store, on_line, allowed=line), line_truth, line_categories)
    masked = figures(answers(store, on_line, allowed=line, ranked=False), line_truth, line_categories)
    alone_store = work / f"n{size}-line" / "store"
    if not (args.accuracy_only and (alone_store / "current").exists()):  # a full run trains it anew
        alone_store, _, _ = train_parts(alone_store.parent, len(line), args.photos, args.classifiers, reuse=args.reuse)
    alone = figures(answers(alone_store, on_line), line_truth, line_categories)
    return {
        **{f"all_{key}": value for key, value in overall.items()},
        **{f"line_{key}": value for key, value in ranked.items()},
        **{f"masked_{key}": value for key, value in masked.items()},
        **{f"alone_{key}": value for key, value in alone.items()},
    }


def enrolment_figures(enrolled: list[dict[str, Any]], store: Path) -> dict[str, Any]:
    """The enrolment table's figures of `enrolled` (enrol_parts' rows) on `store`."""
    return {
        "enrol_p50": statistics.median(row["seconds"] for row in enrolled),
        "enrol_max": max(row["seconds"] for row in enrolled),
        "served_p50": statistics.median(row["served_s"] for row in enrolled),
        "served_max": max(row["served_s"] for row in enrolled),
        "answered_p50": statistics.median(row["answered_s"] for row in enrolled),
        "answered_max": max(row["answered_s"] for row in enrolled),
        "refit_p50": statistics.median(row["refit_s"] for row in enrolled),
        "grown_mb": statistics.mean(row["grown"] for row in enrolled) / 1e6,
        "contained_mb": statistics.mean(row["self_contained"] for row in enrolled) / 1e6,
        "own_mb": enrolled[0]["own_features"] / 1e6,
        "versions": len(version_folders(store)),
        "current": current_version(store),
        "store_mb": store_bytes(store) / 1e6,
        **tenths(enrolled),
    }


def tenths(enrolled: list[dict[str, Any]]) -> dict[str, float]:
    """The first frame answered, p50 over the first and the last tenth of `enrolled` (at least one each): whether
    an enrolment costs more once hundreds were enrolled before it."""
    tenth = max(1, len(enrolled) // 10)
    return {
        "first_tenth_p50": statistics.median(row["answered_s"] for row in enrolled[:tenth]),
        "last_tenth_p50": statistics.median(row["answered_s"] for row in enrolled[-tenth:]),
    }


def accuracy_only(size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`--accuracy-only`: accuracy and the line on the store an earlier run left in --workdir, nothing else."""
    if not (work / f"n{size}" / "store" / "current").exists():
        folder = work / f"n{size}"
        raise SystemExit(f"{folder} holds no trained store: run once without --accuracy-only, with this --workdir")
    return accuracy_figures(size, args, work)


def enrolments_only(size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`--enrolments-only`: new parts enrolled on the store an earlier run left in --workdir, nothing else."""
    from models.bundle import load_model

    store = work / f"n{size}" / "store"
    if not (store / "current").exists():
        raise SystemExit(f"{store} holds no trained store: run once without --enrolments-only, with this --workdir")
    known = set(load_model(store, searchable=False).head.products)
    first = size + 1000 + 20
    while any(item.product in known for item in parts.parts(args.enrolments, start=first)):
        first += args.enrolments
    before_mb = store_bytes(store) / 1e6
    with ConsolidationBehind(store) if args.consolidate_behind else contextlib.nullcontext() as behind:
        enrolled = enrol_parts(store, first, args.enrolments, args.photos, work / f"n{size}" / "new")
    runs = behind.runs if behind is not None else []
    return {
        "size": size,
        "store_before_mb": before_mb,
        "refits": sum(not row["quick"] for row in enrolled),
        "waits": sum(row["waited_s"] > 0 for row in enrolled),
        "waited_max": max(row["waited_s"] for row in enrolled),
        "consolidations": f"{sum(o == 'done' for o, _ in runs)} ({sum(o == 'failed' for o, _ in runs)} failed)",
        "consolidation_p50": statistics.median(s for _, s in runs) if runs else 0.0,
        **enrolment_figures(enrolled, store),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="catalog sizes, comma-separated")
    parser.add_argument("--photos", type=int, default=20, help="photos per product, trained and enrolled")
    parser.add_argument("--enrolments", type=int, default=3, help="new products enrolled at each size")
    parser.add_argument("--classifiers", default="logistic", help="the classifier search's candidates")
    parser.add_argument("--test-photos", type=int, default=5, help="test photos per product (another day's)")
    parser.add_argument("--line", type=int, default=20, help="parts on the line measured at each size")
    parser.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    parser.add_argument(
        "--reuse", action="store_true", help="use the photos and feature cache an earlier run left in --workdir again"
    )
    parser.add_argument(
        "--accuracy-only",
        action="store_true",
        help="only measure accuracy and the line on the stores an earlier run left in --workdir",
    )
    parser.add_argument(
        "--enrolments-only",
        action="store_true",
        help="only enrol new parts on the stores an earlier run left in --workdir (their training, accuracy, line "
        "and consolidation not measured)",
    )
    parser.add_argument(
        "--consolidate-behind",
        action="store_true",
        help="with --enrolments-only: consolidate in a child process beside the enrolments, as a worker does",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="partsight-scale-") as scratch:
        work = Path(args.workdir or scratch)
        if args.enrolments_only:
            return print_enrolments([enrolments_only(size, args, work) for size in sizes], args)
        if args.accuracy_only:
            return print_accuracy([{"size": size, **accuracy_only(size, args, work)} for size in sizes], args)
        results = [measure(size, args, work) for size in sizes]
    print(f"\n{args.photos} photos per product; classifiers: {args.classifiers}; {args.enrolments} enrolments each")
    print(
        "| products | train s | train peak MiB | enrol s p50 | enrol s max | served s p50 | served s max "
        "| first frame answered s p50 | max | refine s p50 | store grows MB/enrolment "
        "| self-contained version MB (before) | new photos' features MB | consolidation s |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['size']} | {r['train_s']:.0f} | {r['peak_mib']:.0f} | {r['enrol_p50']:.1f} | {r['enrol_max']:.1f} "
            f"| {r['served_p50']:.1f} | {r['served_max']:.1f} | {r['answered_p50']:.1f} | {r['answered_max']:.1f} "
            f"| {r['refit_p50']:.1f} | {r['grown_mb']:.2f} "
            f"| {r['contained_mb']:.2f} | {r['own_mb']:.2f} "
            f"| {r['consolidation_s']:.0f} |"
        )
    print("\nThe enrolled parts, on another day's photos: quick (as enrolled) and after the consolidation")
    print("| products | quick: top-1 | quick: known right | consolidated: top-1 | consolidated: known right |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['size']} | {r['quick_top1']:.1%} | {r['quick_known_right']:.1%} | {r['consolidated_top1']:.1%} "
            f"| {r['consolidated_known_right']:.1%} |"
        )
    return print_accuracy(results, args)


def print_accuracy(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    print(f"\nAccuracy on another day's photos ({args.test_photos} of each of up to 100 parts and of 20 never-seen)")
    print("| products | top-1 | known right | known wrong | category | macro-F1 | never-seen refused |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['size']} | {r['all_top1']:.1%} | {r['all_known_right']:.1%} | {r['all_known_wrong']:.1%} "
            f"| {r['all_category']:.1%} | {r['all_macro_f1']:.3f} | {r['all_unseen_refused']:.1%} |"
        )
    print(
        f"\nA line of {args.line} parts (the same photos of its parts, and the never-seen ones, answered on the line): "
        "top-1 / known right / known wrong / never-seen refused"
    )
    print(f"| products | ranked by the line's classifier | the head alone (before) | a model of those {args.line} |")
    print("| ---: | ---: | ---: | ---: |")
    for r in results:
        cells = [
            f"{r[f'{k}_top1']:.1%} / {r[f'{k}_known_right']:.1%} / {r[f'{k}_known_wrong']:.1%} / "
            f"{r[f'{k}_unseen_refused']:.1%}"
            for k in ("line", "masked", "alone")
        ]
        print(f"| {r['size']} | {' | '.join(cells)} |")
    return 0


def print_enrolments(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    print(f"\n{args.photos} photos per part; {args.enrolments} enrolments each, on the stores in --workdir")
    print(
        "| products | enrol s p50 | enrol s max | served s p50 | served s max | first frame answered s p50 | max "
        "| refine s p50 | store grows MB/enrolment | store MB before / after | versions kept "
        "| first frame answered p50: first tenth / last tenth | full refits | waited for a consolidation (max s) "
        "| consolidations behind | their s p50 |"
    )
    print("|" + " ---: |" * 16)
    for r in results:
        print(
            f"| {r['size']} | {r['enrol_p50']:.1f} | {r['enrol_max']:.1f} | {r['served_p50']:.1f} "
            f"| {r['served_max']:.1f} | {r['answered_p50']:.1f} | {r['answered_max']:.1f} | {r['refit_p50']:.1f} "
            f"| {r['grown_mb']:.2f} | {r['store_before_mb']:.1f} / {r['store_mb']:.1f} | {r['versions']} "
            f"| {r['first_tenth_p50']:.2f} / {r['last_tenth_p50']:.2f} s | {r['refits']} "
            f"| {r['waits']} ({r['waited_max']:.0f}) | {r['consolidations']} "
            f"| {r['consolidation_p50']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
