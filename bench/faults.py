"""The fault matrix as a report: each fault strikes while a camera streams; every frame sent must have exactly
one answer. Prints scenario, frames sent, answered, duplicated, lost and the worst frame-to-answer latency.

    .venv/bin/python -m bench.faults [--rate 10] [--only bridge-cut-30s,sigkill-worker] [--keep]

Starts its own Mosquitto (persistence on) and Redis (append-only) and, per scenario, a fresh bridge and worker
serving a demo model; the scenarios are the integration tests' own (tests/fault_matrix.py). `--keep`
leaves the logs in the work folder it prints.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.e2e import demo_model, sample_jpegs, table
from partsight.testing.fault_matrix import BY_NAME, SCENARIOS, stream_through
from partsight.testing.servers import mosquitto, redis_server


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second the camera sends")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios (of {', '.join(BY_NAME)})")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs of every process)")
    args = parser.parse_args()
    chosen = [BY_NAME[name] for name in args.only.split(",") if name] if args.only else list(SCENARIOS)
    work = Path(tempfile.mkdtemp(prefix="partsight-faults-"))
    print(f"work folder {work}", file=sys.stderr)
    mqtt, redis = mosquitto(work / "mosquitto"), redis_server(work / "redis")
    mqtt.start()
    redis.start()
    rows: list[tuple[str, ...]] = []
    failed = 0
    try:
        model = demo_model(work / "model")
        images = sample_jpegs(16)
        for scenario in chosen:
            print(f"{scenario.name}: {scenario.title} ...", file=sys.stderr)
            outcome = stream_through(
                scenario,
                mqtt=mqtt,
                redis=redis,
                model_dir=model,
                logs=work / "logs" / scenario.name,
                images=images,
                rate=args.rate,
            )
            ok = outcome.lost == 0 and outcome.answered == outcome.sent
            ok = ok and outcome.duplicated <= scenario.allowed_duplicates  # SIGKILL's window: see the scenario
            failed += not ok
            rows.append(
                (
                    scenario.title,
                    f"{outcome.fault_s:.1f}",
                    str(outcome.sent),
                    str(outcome.answered),
                    str(outcome.duplicated),
                    str(outcome.lost),
                    f"{outcome.worst_latency_s:.1f}",
                    ("yes" if not outcome.duplicated else "duplicates in the kill window") if ok else "**NO**",
                )
            )
            print("  " + " | ".join(rows[-1]), file=sys.stderr)
    finally:
        mqtt.stop()
        redis.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n## Fault matrix ({args.rate:g} frames/s from one camera, QoS 1)\n")
    header = ("scenario", "fault s", "sent", "answered", "duplicated", "lost", "worst latency s", "exactly once")
    print(table(rows, header))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
