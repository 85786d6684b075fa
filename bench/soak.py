"""Soak: a long run at half of capacity, sampling memory, descriptors and Redis, to show nothing grows.

    .venv/bin/python -m bench.soak [--minutes 10 | --frames 1000000] [--segment-s 30] [--load 0.5]

Starts its own Mosquitto, Redis, bridge and worker (as bench.e2e does), measures capacity with a short
closed-loop run, then streams real 640x480 JPEGs at `--load` x capacity in segments. After every segment
it samples the RSS and open file descriptors of the bridge and the worker, Redis's used memory and key
count, and the answered frames. It prints one row per segment and a verdict after warm-up (the first
fifth of the segments): memory growth (target below 5%), descriptors (flat), Redis (bounded: what is
left per frame is the answered-once ledger, which lives PARTSIGHT_DEDUPE_TTL_S).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.e2e import Config, Servers, Stack, demo_model, pct, sample_jpegs, table
from broker.settings import DEFAULT_WINDOW_FRAMES


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_keys(stack: Stack) -> int:
    import redis

    from broker.dispatch import redis_client_url

    return int(redis.Redis.from_url(redis_client_url(stack.redis_url)).dbsize())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames instead (e.g. 1000000)")
    parser.add_argument("--segment-s", type=float, default=30.0)
    parser.add_argument("--load", type=float, default=0.5, help="share of the measured capacity to offer")
    args = parser.parse_args()
    setup = argparse.Namespace(
        device="cpu", workers=1, bridges=1, max_queue=1000, lanes=None, batch=None, cameras=1, window_ms=5.0
    )  # the defaults a plant runs
    work = Path(tempfile.mkdtemp(prefix="partsight-soak-"))
    jpegs = sample_jpegs(64)
    servers = Servers.start(work)
    stack = Stack(servers, work, demo_model(work / "model"), setup, Config("auto", DEFAULT_WINDOW_FRAMES), 1)
    rows: list[tuple[str, ...]] = []
    samples: list[dict[str, float]] = []
    try:
        capacity = stack.measure("capacity", jpegs, count=600, fps=0, window=16).throughput
        rate = capacity * args.load
        print(f"capacity {capacity:.1f} frames/s; soaking at {rate:.1f} frames/s", file=sys.stderr)
        started = time.monotonic()
        total = 0
        segment = 0
        while True:
            elapsed_min = (time.monotonic() - started) / 60
            if (args.frames and total >= args.frames) or (not args.frames and elapsed_min >= args.minutes):
                break
            segment += 1
            run = stack.measure(f"soak{segment}", jpegs, count=int(rate * args.segment_s), fps=rate, window=10_000)
            total += run.sent
            bridge, worker = stack.pids()["bridge0"], stack.pids()["worker0"]
            sample = {
                "minute": (time.monotonic() - started) / 60,
                "frames": total,
                "answered": run.results + sum(run.errors.values()),
                "sent": run.sent,
                "p99": pct(run.latencies_ms, 0.99),
                "bridge_rss": stack.rss("bridge"),
                "worker_rss": stack.rss("worker"),
                "bridge_fds": open_fds(bridge),
                "worker_fds": open_fds(worker),
                "redis_mib": stack.redis_memory_mib(),
                "redis_keys": redis_keys(stack),
            }
            samples.append(sample)
            rows.append(
                (
                    f"{sample['minute']:.1f}",
                    f"{total:,}",
                    f"{sample['answered']}/{sample['sent']}",
                    f"{sample['p99']:.0f}",
                    f"{sample['bridge_rss']:.1f}",
                    f"{sample['worker_rss']:.1f}",
                    f"{sample['bridge_fds']}/{sample['worker_fds']}",
                    f"{sample['redis_mib']:.2f}",
                    f"{sample['redis_keys']:,}",
                )
            )
            print("  " + " | ".join(rows[-1]), file=sys.stderr)
    finally:
        stack.stop()
        servers.stop()
    print(f"\n## Soak at {args.load:.0%} of capacity ({capacity:.1f} frames/s measured; {rate:.1f} offered)\n")
    header = ("minute", "frames", "answered/sent", "p99 ms", "bridge MiB", "worker MiB", "fds bridge/worker")
    print(table(rows, (*header, "Redis MiB", "Redis keys")))
    warm = samples[max(1, len(samples) // 5) :] if len(samples) > 2 else samples
    if len(warm) >= 2:
        first, last = warm[0], warm[-1]
        frames = last["frames"] - first["frames"]
        verdict = [
            ("bridge RSS growth after warm-up", f"{(last['bridge_rss'] / first['bridge_rss'] - 1):+.1%}"),
            ("worker RSS growth after warm-up", f"{(last['worker_rss'] / first['worker_rss'] - 1):+.1%}"),
            (
                "descriptors, bridge (min-max)",
                f"{min(s['bridge_fds'] for s in warm)}-{max(s['bridge_fds'] for s in warm)}",
            ),
            (
                "descriptors, worker (min-max)",
                f"{min(s['worker_fds'] for s in warm)}-{max(s['worker_fds'] for s in warm)}",
            ),
            ("Redis bytes left per frame", f"{(last['redis_mib'] - first['redis_mib']) * 2**20 / max(frames, 1):.0f}"),
            ("Redis keys left per frame", f"{(last['redis_keys'] - first['redis_keys']) / max(frames, 1):.2f}"),
            ("frames unanswered", str(sum(s["sent"] - s["answered"] for s in samples))),
        ]
        print("\n" + table(verdict, ("after warm-up", "value")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
