"""End-to-end throughput and latency against the bare model's ceiling, measured in one run on one box.

    .venv/bin/python -m bench.e2e [--frames 1500] [--window 8] [--mqtt-url ...] [--redis-url ...]

Ceiling: the bare backbone on the same frames, decoded beforehand, in one process with one torch thread
(what one worker process has), at its best batch size; decode + backbone in series is reported beside it.
End to end: a camera publishes the JPEGs as fast as answers come back (a fixed number in flight) through
Mosquitto, the bridge, Redis, the worker and back.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def sample_jpegs(count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[bytes]:
    """Real photos (scikit-learn's sample images), cropped and scaled to `size`, as JPEG quality 90."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(image) for image in load_sample_images().images]
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        buffer = io.BytesIO()
        photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def demo_model(folder: Path) -> Path:
    from models import datasets
    from models.training import TrainOptions, train

    datasets.export_training_folder(folder / "images", per_class=10)
    catalog = folder / "catalog.json"
    catalog.write_text(json.dumps(list(datasets.catalog().values())))
    train(
        TrainOptions(images=folder / "images", catalog=catalog, out=folder / "store", name="bench", show_progress=False)
    )
    return folder / "store"


def best_rate(label: str, run: Callable[[int, int], None], seconds: float) -> tuple[int, float]:
    """Best (batch size, frames/s) of `run(batch, offset)` over batch sizes 1, 2, 4 and 8."""
    best = (1, 0.0)
    for batch in (1, 2, 4, 8):
        run(batch, 0)  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 4:
            run(batch, done)
            done += batch
        rate = done / (time.perf_counter() - started)
        print(f"  {label} batch {batch}: {rate:6.1f} frames/s", file=sys.stderr)
        if rate > best[1]:
            best = (batch, rate)
    return best


def ceilings(model_dir: Path, jpegs: list[bytes], seconds: float = 16.0) -> dict[str, tuple[int, float]]:
    """One process, one torch thread: the bare backbone on decoded frames, and decode + backbone in series."""
    from models.decode import decode_image
    from models.recognizer import Recognizer

    recognizer = Recognizer.load(model_dir, device="cpu", cpu_threads=1)
    size = recognizer.input_size
    decoded = [decode_image(jpeg, size=size) for jpeg in jpegs]

    def backbone(batch: int, offset: int) -> None:
        recognizer.features(np.stack([decoded[(offset + i) % len(decoded)] for i in range(batch)]))

    def decode_and_backbone(batch: int, offset: int) -> None:
        images = [decode_image(jpegs[(offset + i) % len(jpegs)], size=size) for i in range(batch)]
        recognizer.features(np.stack(images))

    return {
        "backbone": best_rate("backbone", backbone, seconds),
        "decode+backbone": best_rate("decode+backbone", decode_and_backbone, seconds),
    }


def cpu_steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine: steal is time the hypervisor gave to someone else."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[7], sum(fields)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_metric(port: int, name: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            if scrape(port).get(name) == 1.0:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not 1 after {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--window", type=int, default=8, help="frames in flight")
    parser.add_argument("--mqtt-url", help="an MQTT broker to use (default: start a fresh Mosquitto)")
    parser.add_argument("--redis-url", help="a Redis to use (default: start a fresh redis-server)")
    parser.add_argument("--model-dir", help="a trained model (default: a small demo model trained now)")
    args = parser.parse_args()

    from broker.camera import Camera, percentile, stream
    from broker.settings import MqttSettings
    from broker.topics import Topics
    from partsight.embedded import Embedded, free_port, start_mqtt, start_redis

    work = Path(tempfile.mkdtemp(prefix="partsight-bench-"))
    servers: list[Embedded] = []
    if not args.mqtt_url:  # fresh servers: no state left by other runs, nothing else sharing them
        servers.append(start_mqtt(work / "mqtt"))
        args.mqtt_url = servers[-1].url
    if not args.redis_url:
        servers.append(start_redis(work / "redis"))
        args.redis_url = servers[-1].url
    model_dir = Path(args.model_dir) if args.model_dir else demo_model(work)
    jpegs = sample_jpegs(24)
    mean_kib = sum(map(len, jpegs)) / len(jpegs) / 1024
    measured = ceilings(model_dir, jpegs)
    best_batch, ceiling_fps = measured["backbone"]
    serial_batch, serial_fps = measured["decode+backbone"]

    prefix = f"bench{os.getpid()}"
    bridge_port, worker_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARTSIGHT_")},
        "PARTSIGHT_MQTT_URL": args.mqtt_url,
        "PARTSIGHT_REDIS_URL": args.redis_url,
        "PARTSIGHT_TOPIC_PREFIX": prefix,
        "PARTSIGHT_MODEL_DIR": str(model_dir),
        "PARTSIGHT_BRIDGE_METRICS_PORT": str(bridge_port),
        "PARTSIGHT_WORKER_METRICS_PORT": str(worker_port),
        "PARTSIGHT_BRIDGE_ID": prefix,
        "PARTSIGHT_WORKER_ID": prefix,
        "PARTSIGHT_LOG_LEVEL": "warning",
        "PARTSIGHT_DEVICE": "cpu",
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "partsight.cli", name],
            env=env,
            stdout=(work / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name in ("worker", "bridge")
    }
    try:
        wait_metric(worker_port, "partsight_worker_model_loaded", procs["worker"])
        wait_metric(bridge_port, "partsight_bridge_mqtt_connected", procs["bridge"])
        settings = MqttSettings.from_url(args.mqtt_url)
        with Camera(settings, Topics(prefix), "bench-cam") as camera:
            stream(camera, jpegs, count=min(40, args.frames), fps=0, window=args.window)  # warm-up
            camera.answers.clear()
            before = scrape(worker_port)
            cpu_before = {name: cpu_seconds(proc.pid) for name, proc in procs.items()}
            steal_before = cpu_steal_ticks()
            summary = stream(camera, jpegs, count=args.frames, fps=0, window=args.window)
            steal_after = cpu_steal_ticks()
            cpu_ms = {
                name: (cpu_seconds(proc.pid) - cpu_before[name]) * 1000 / max(1, summary.sent)
                for name, proc in procs.items()
            }
        after = scrape(worker_port)
        memory = {name: rss_mib(proc.pid) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        for server in servers:
            server.stop()

    def stage_ms(stage: str) -> float:
        total = f'partsight_worker_stage_seconds_sum{{stage="{stage}"}}'
        count = f'partsight_worker_stage_seconds_count{{stage="{stage}"}}'
        n = after.get(count, 0) - before.get(count, 0)
        return (after.get(total, 0) - before.get(total, 0)) / n * 1000 if n else float("nan")

    batches = after["partsight_worker_batch_size_frames_count"] - before["partsight_worker_batch_size_frames_count"]
    frames_in_batches = (
        after["partsight_worker_batch_size_frames_sum"] - before["partsight_worker_batch_size_frames_sum"]
    )
    latencies = summary.latencies_ms
    e2e = summary.throughput
    rows = [
        ("JPEG payload", f"640x480, mean {mean_kib:.0f} KiB"),
        ("ceiling: bare backbone, 1 process, 1 thread", f"{ceiling_fps:.1f} frames/s (batch {best_batch})"),
        ("decode + backbone in series, 1 thread", f"{serial_fps:.1f} frames/s (batch {serial_batch})"),
        ("end to end: camera -> MQTT -> bridge -> Redis -> worker -> MQTT", f"{e2e:.1f} frames/s"),
        ("ratio end to end / bare backbone ceiling", f"{e2e / ceiling_fps:.2f}"),
        ("ratio end to end / decode + backbone in series", f"{e2e / serial_fps:.2f}"),
        ("frames answered / sent", f"{len(summary.answers)} / {summary.sent} ({summary.errors} errors)"),
        (
            "latency p50 / p99 (window " + str(args.window) + ")",
            f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f} ms",
        ),
        ("mean batch size", f"{frames_in_batches / batches:.1f}" if batches else "n/a"),
        *[
            (f"stage {stage} (mean)", f"{stage_ms(stage):.2f} ms")
            for stage in ("queue", "decode", "features", "classify", "publish", "total")
        ],
        ("CPU per frame: bridge / worker", f"{cpu_ms['bridge']:.1f} / {cpu_ms['worker']:.1f} ms"),
        (
            "CPU per frame: worker beyond decode + backbone",
            f"{cpu_ms['worker'] - 1000 / serial_fps:.1f} ms",
        ),
        (
            "CPU stolen by the hypervisor during the run",
            f"{100 * (steal_after[0] - steal_before[0]) / max(1, steal_after[1] - steal_before[1]):.1f} %",
        ),
        ("RSS bridge / worker", f"{memory['bridge']:.0f} / {memory['worker']:.0f} MiB"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"\n{'measure':<{width}}  value\n{'-' * width}  {'-' * 30}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0 if len(summary.answers) == summary.sent else 1


if __name__ == "__main__":
    sys.exit(main())
