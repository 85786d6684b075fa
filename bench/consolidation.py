"""What a consolidation costs at catalog scale, and what it leaves the answers: one revision of the code against
another, in the same run.

    .venv/bin/python -m bench.consolidation --workdir DIR [--size 1000] [--enrolments 10] [--rounds 2]
        --code BASELINE_CHECKOUT --code .

`size` look-alike parts (models/train/parts.py, 20 photos each) are trained into DIR/n<size>/store by this checkout
as bench.scale trains them (the photos and the feature cache an earlier run left are used again; the training takes
15-25 minutes at 1,000 parts on the 2-core box), `enrolments` new parts are enrolled quickly on a copy of it
(bench.scale.enrol_parts) and consolidated by this checkout, and `enrolments` more are enrolled (enrolled_store:
what a consolidation meets in a plant that enrols; made once, kept in DIR). Then, for each round and each `--code`
in turn (a checkout of the repository: a git worktree of the baseline's revision, and this one), a fresh `cp -a`
copy of that enrolled store is consolidated by a child process running that checkout's `consolidate_all` (nothing
else running, `--threads` BLAS threads), timed. Each consolidated copy answers, with this checkout's code, photos
taken on another day: 20 of each enrolled part, 4 of each of the first 100 trained parts, and 4 of each of 20
never-seen parts. One table: the seconds of each round, their ratio to the first code's in the same round, and
top-1, known right, known wrong and never-seen refused for the enrolled and the trained parts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.scale import answers, enrol_parts, figures, progress, train_parts
from models.train import parts

PHOTOS = 20
ROOT = Path(__file__).resolve().parent.parent
MADE = ".bench-made"  # written last: a store without it was left half made
CONSOLIDATE = (
    "import sys, time; from pathlib import Path; from models.train.consolidation import consolidate_all; "
    "started = time.monotonic(); rounds = consolidate_all(Path(sys.argv[1]), keep_versions=20); "
    "print(time.monotonic() - started, sum(r.folded for r in rounds))"
)


def enrolled_store(work: Path, size: int, enrolments: int, threads: int) -> tuple[Path, int]:
    """The store a consolidation meets once a plant enrols: the trained parts, `enrolments` new parts enrolled
    quickly and consolidated by this checkout, then `enrolments` more enrolled quickly. Made once and kept in
    `work` (a store a run left half made is made again); also the index of the first new part."""
    first_new = size + 1000 + 20  # past the never-seen parts bench.scale answers (size + 1000 on)
    enrolled = work / f"n{size}-steady{enrolments}"
    if not (enrolled / MADE).exists():
        store, seconds, _ = train_parts(work / f"n{size}", size, PHOTOS, "logistic", reuse=True)
        progress(f"{size} parts trained in {seconds:.0f} s")
        shutil.rmtree(enrolled, ignore_errors=True)
        subprocess.run(["cp", "-a", str(store), str(enrolled)], check=True)
        enrol_parts(enrolled, first_new, enrolments, PHOTOS, work / "enrolled-photos")
        seconds, _ = consolidate(enrolled, ROOT, threads)
        progress(f"the first {enrolments} enrolled parts consolidated in {seconds:.0f} s")
        enrol_parts(enrolled, first_new + enrolments, enrolments, PHOTOS, work / "enrolled-photos")
        (enrolled / MADE).touch()
    return enrolled, first_new


def consolidated_copy(enrolled: Path, code: Path, target: Path, threads: int) -> tuple[float, int]:
    """A fresh copy of `enrolled` at `target`, consolidated by `code`'s consolidate_all in a child process: its
    seconds and the refinements it folded."""
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(enrolled), str(target)], check=True)
    return consolidate(target, code, threads)


def consolidate(store: Path, code: Path, threads: int) -> tuple[float, int]:
    """`code`'s consolidate_all on `store` in a child process on `threads` BLAS threads: its seconds and the
    refinements it folded."""
    limits = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", CONSOLIDATE, str(store)],
        cwd=code,
        env={"PYTHONPATH": str(code.resolve()), "PATH": "/usr/bin:/bin", **limits},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the consolidation by {code} failed:\n{done.stderr[-2000:]}")
    seconds, folded = done.stdout.split()[-2:]
    return float(seconds), int(folded)


def test_photos(work: Path, size: int, first_new: int, enrolments: int) -> dict[str, tuple[list[Any], dict[str, str]]]:
    """Another day's photos: the enrolled parts', the trained parts' with never-seen ones, and their categories."""
    folder = work / "consolidation-test"
    new = parts.export_camera_folder(folder / "new", products=enrolments, per_product=PHOTOS, start=first_new)
    trained = parts.export_camera_folder(folder / "trained", products=min(size, 100), per_product=4)
    unseen = parts.export_camera_folder(folder / "unseen", products=20, per_product=4, start=size + 1000)
    catalog = parts.catalog(first_new + enrolments)
    known = [item.product for item in parts.parts(size)] + [
        item.product for item in parts.parts(enrolments, start=first_new)
    ]
    categories = {p: str(catalog[p]["category"]) for p in known}
    return {"enrolled": (new + unseen, categories), "trained": (trained + unseen, categories)}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(args.workdir)
    enrolled, first_new = enrolled_store(work, args.size, args.enrolments, args.threads)
    photos = test_photos(work, args.size, first_new, 2 * args.enrolments)
    rows = []
    for round_ in range(args.rounds):
        for code in args.code:
            target = work / f"consolidated-{Path(code).resolve().name}"
            seconds, folded = consolidated_copy(enrolled, Path(code), target, args.threads)
            progress(f"round {round_ + 1}, {code}: {folded} refinement(s) folded in {seconds:.0f} s")
            row: dict[str, Any] = {"round": round_ + 1, "code": code, "seconds": seconds}
            for name, (camera, categories) in photos.items():
                row[name] = figures(answers(target, camera), [product for _, product in camera], categories)
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the stores are made (and kept) here")
    parser.add_argument("--size", type=int, default=1000, help="parts trained")
    parser.add_argument("--enrolments", type=int, default=10, help="new parts enrolled quickly before consolidating")
    parser.add_argument("--rounds", type=int, default=2, help="consolidations per checkout, taken in turn")
    parser.add_argument("--code", action="append", required=True, help="a checkout to consolidate with (repeat)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="BLAS threads of each consolidation (default: every core, as `partsight models --consolidate`; a "
        "worker's consolidation runs on one)",
    )
    args = parser.parse_args()
    for code in args.code:
        if not (Path(code) / "models" / "train" / "consolidation.py").is_file():
            parser.error(f"--code {code}: not a checkout of this repository (no models/train/consolidation.py)")
    rows = measure(args)
    print(f"\nconsolidation at {args.size} + {args.enrolments} parts, {args.enrolments} more enrolled quickly\n")
    print(
        "| round | code | seconds | ratio to the first code | enrolled: top-1 / right / wrong | trained: top-1 / right "
        "/ wrong | never-seen refused |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    first = {row["round"]: row["seconds"] for row in rows if row["code"] == args.code[0]}
    for row in rows:
        new, old = row["enrolled"], row["trained"]
        print(
            f"| {row['round']} | {row['code']} | {row['seconds']:.0f} | {row['seconds'] / first[row['round']]:.2f} | "
            f"{new['top1']:.1%} / {new['known_right']:.1%} / {new['known_wrong']:.1%} | "
            f"{old['top1']:.1%} / {old['known_right']:.1%} / {old['known_wrong']:.1%} | {old['unseen_refused']:.1%} |"
        )
    for code in args.code:
        median = statistics.median(row["seconds"] for row in rows if row["code"] == code)
        print(f"\n{code}: median {median:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
