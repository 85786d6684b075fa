"""Coverage-guided fuzzing of the worker's decode path (sniff, header limits, Pillow, EXIF, resize) with atheris.

    .venv/bin/pip install -e ".[fuzz]"
    .venv/bin/python -m bench.fuzz_decode --seconds 300 [--corpus DIR] [--crashes DIR]

Starts from the bad-input corpus (tests/bad_inputs.py: real photos in every format, and broken ones) and
mutates for the given time. The property under test: every input decodes to a 224 x 224 x 3 uint8 array or
is refused with ImageError and one of the contract's codes. Anything else (another exception, a wrong shape)
is a crash: its input is saved under --crashes and fuzzing goes on. Prints one table at the end; exits 1
when anything crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from models.errors import ImageError
    from models.extract.decode import DecodeLimits, decode_image

CODES = frozenset({"unsupported_format", "image_undecodable", "image_too_large"})
LIMITS = DecodeLimits(max_pixels=25_000_000)


class Tally:
    def __init__(self, crashes: Path) -> None:
        self.crashes = crashes
        self.executions = 0
        self.answered = 0
        self.refused: dict[str, int] = {}
        self.crashed: dict[str, str] = {}  # sha256 of the input -> first line of what went wrong

    def run(self, data: bytes) -> None:
        self.executions += 1
        try:
            out = decode_image(data, size=224, limits=LIMITS)
            if out.shape != (224, 224, 3) or out.dtype.name != "uint8":
                raise AssertionError(f"decoded to {out.shape} {out.dtype}")
            self.answered += 1
        except ImageError as exc:
            if exc.code not in CODES:
                self.crash(data, f"unknown code {exc.code}")
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
        except Exception as exc:  # the property is broken: keep the input
            self.crash(data, "".join(traceback.format_exception_only(exc)).strip())

    def crash(self, data: bytes, what: str) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.crashed:
            self.crashed[digest] = what.splitlines()[0][:160]
            (self.crashes / f"crash-{digest[:16]}").write_bytes(data)


def seed_corpus(folder: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from partsight.testing.bad_inputs import cases

    count = 0
    for case in cases():
        if 0 < len(case.payload) < 1 << 20:
            (folder / f"seed-{case.name}").write_bytes(case.payload)
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz")
    parser.add_argument("--corpus", help="corpus folder, kept between runs (default: a temporary one)")
    parser.add_argument("--crashes", default="fuzz-crashes", help="where crashing inputs are written")
    parser.add_argument("--max-len", type=int, default=256 * 1024, help="largest input libFuzzer makes")
    args = parser.parse_args()
    corpus = Path(args.corpus) if args.corpus else Path(tempfile.mkdtemp(prefix="partsight-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = Path(args.crashes)
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = seed_corpus(corpus)
    tally = Tally(crashes)
    started = time.monotonic()
    deadline = started + args.seconds

    def one_input(data: bytes) -> None:
        tally.run(data)
        if time.monotonic() >= deadline:  # libFuzzer's own time limit exits without returning to Python
            report(tally, time.monotonic() - started, seeds, corpus)
            sys.stdout.flush()
            os._exit(1 if tally.crashed else 0)

    fuzzer_args = [
        sys.argv[0],
        f"-max_len={args.max_len}",
        "-rss_limit_mb=4096",
        f"-max_total_time={args.seconds + 60}",
    ]
    atheris.Setup([*fuzzer_args, str(corpus)], one_input)
    atheris.Fuzz()
    return 2  # not reached: the deadline ends the process


def report(tally: Tally, seconds: float, seeds: int, corpus: Path) -> None:
    from bench.e2e import table

    rows = [
        ("seconds", f"{seconds:.0f}"),
        ("executions", f"{tally.executions:,}"),
        ("executions/s", f"{tally.executions / max(seconds, 1e-9):,.0f}"),
        ("seed inputs", str(seeds)),
        ("corpus after", str(sum(1 for _ in corpus.iterdir()))),
        ("decoded", f"{tally.answered:,}"),
        *((f"refused: {code}", f"{count:,}") for code, count in sorted(tally.refused.items())),
        ("crashes", str(len(tally.crashed))),
    ]
    print("\n## Fuzzing models.extract.decode.decode_image (atheris)\n")
    print(table(rows, ("measure", "value")))
    for digest, what in tally.crashed.items():
        print(f"- crash {digest[:16]}: {what}")


if __name__ == "__main__":
    sys.exit(main())
