"""End-to-end throughput and latency against the box's bare ceiling, all measured in one run on one box.

    .venv/bin/python -m bench.e2e [--sizes 640x480,1920x1080] [--windows 1,8,32] [--device cpu|cuda] ...

Ceiling: decode + features on the same JPEGs with nothing around them: on a CPU, ONNX Runtime with one
process per core, one thread each; on a GPU, the GPU engine in one process; each at its best batch size.
End to end: a camera publishes the JPEGs through Mosquitto, the bridge, Redis, the worker and back, once per
bridge window size (PARTSIGHT_WINDOW_FRAMES): closed-loop (a fixed number in flight) for capacity; at the
largest window also open-loop at 50%, 70% and 100% of that capacity for latency, then 3x capacity against the
bridge's queue bound (the overload row). Transport only: the same with the `none` engine (no decode, no
features, every frame answered unknown), so the cost of everything around the model stands alone.
Mosquitto and Redis are the test suite's own (partsight.testing.servers: persistence on, as deployed).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from partsight.testing.harness import Proc, base_env, partsight, scrape, wait_for
from partsight.testing.servers import ServerProcess, free_port, mosquitto, redis_server
from partsight.testing.stack import ready

Sample = tuple[str, tuple[tuple[str, str], ...]]
TRANSPORT_ONLY = "none"

STAGES = ("queue", "decode", "features", "classify", "publish", "total")


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
    from models.train import datasets
    from models.train.trainer import TrainOptions, train

    datasets.export_training_folder(folder / "images", per_class=10)
    catalog = folder / "catalog.json"
    catalog.write_text(json.dumps(list(datasets.catalog().values())))
    train(
        TrainOptions(images=folder / "images", catalog=catalog, out=folder / "store", name="bench", show_progress=False)
    )
    return folder / "store"


# ---------------------------------------------------------------------------------------------- ceiling


def engine_rate(engine: Any, jpegs: list[bytes], batch: int, seconds: float, start_at: float = 0.0) -> float:
    """frames/s of prepare (decode or header check) + features on `jpegs`, batch by batch, for `seconds`
    from `start_at` (wall clock; 0: at once), after one warm-up batch."""
    from models.extract.decode import DecodeLimits

    limits = DecodeLimits()
    engine.features([engine.prepare(jpegs[i % len(jpegs)], limits) for i in range(batch)])  # warm-up
    time.sleep(max(0.0, start_at - time.time()))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        engine.features([engine.prepare(jpegs[(done + i) % len(jpegs)], limits) for i in range(batch)])
        done += batch
    return done / (time.perf_counter() - started)


def _onnx_rate(model_dir: str, jpegs: list[bytes], batch: int, seconds: float, start_at: float) -> float:
    """One process, one ONNX Runtime thread and its library pools pinned to it, as a worker's lane (a pool job)."""
    from models.extract.threads import pin_thread_pools
    from models.recognizer import Recognizer

    pin_thread_pools(1)
    engine = Recognizer.load(Path(model_dir), device="cpu", engine="onnxruntime").engine
    return engine_rate(engine, jpegs, batch, seconds, start_at)


def cpu_ceiling(model_dir: Path, jpegs: list[bytes], processes: int, seconds: float) -> dict[int, float]:
    """frames/s of the whole box per batch size: `processes` processes side by side, started together."""
    rates = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        for batch in (1, 2, 4, 8):
            start_at = time.time() + 8.0  # every process loaded and warm before the clock starts
            jobs = [(str(model_dir), jpegs, batch, seconds, start_at)] * processes
            rates[batch] = sum(pool.starmap(_onnx_rate, jobs))
            print(f"  ceiling {processes} process(es), batch {batch}: {rates[batch]:7.1f} frames/s", file=sys.stderr)
    return rates


def gpu_ceiling(model_dir: Path, jpegs: list[bytes], seconds: float) -> dict[int, float]:
    """frames/s of the GPU engine per batch size: header check + GPU decode + features, one process."""
    from models.recognizer import Recognizer

    engine = Recognizer.load(model_dir, device="cuda").engine
    rates = {}
    for batch in (8, 32, 64, 128, 256):
        rates[batch] = engine_rate(engine, jpegs, batch, seconds)
        print(f"  ceiling GPU batch {batch}: {rates[batch]:8.1f} frames/s", file=sys.stderr)
    return rates


# ------------------------------------------------------------------------------------------ measurement


def scrape_all(ports: Sequence[int]) -> dict[Sample, float]:
    """Every sample of every port's /metrics, summed across the ports (several workers or bridges)."""
    total: dict[Sample, float] = {}
    for port in ports:
        for key, value in scrape(port).items():
            total[key] = total.get(key, 0.0) + value
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], q: float) -> float:
    from broker.camera import percentile

    return percentile(values, q)


@dataclass
class Run:
    label: str
    sent: int
    results: int
    errors: dict[str, int]
    elapsed_s: float
    latencies_ms: list[float]  # of results only
    stages_ms: dict[str, float]
    cpu_ms: dict[str, float]
    mean_batch: float
    mean_window: float = 0.0
    profile_ms: dict[str, float] = field(default_factory=dict)  # worker CPU-ms per frame by stage (--profile)

    @property
    def throughput(self) -> float:
        return self.results / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class Servers:
    mqtt: ServerProcess
    redis: ServerProcess

    @classmethod
    def start(cls, work: Path) -> Servers:
        servers = cls(mosquitto(work / "mosquitto"), redis_server(work / "redis"))
        servers.mqtt.start()
        servers.redis.start()
        return servers

    def stop(self) -> None:
        self.mqtt.stop()
        self.redis.stop()


@dataclass
class Config:
    """One deployment to measure: the engine the worker runs and the bridge's window."""

    engine: str
    window_frames: int

    @property
    def name(self) -> str:
        return f"{'transport' if self.engine == TRANSPORT_ONLY else 'model'}-w{self.window_frames}"


class Stack:
    """Bridge(s) and worker process(es) of one configuration, beside Mosquitto and Redis that the run owns."""

    def __init__(
        self, servers: Servers, work: Path, model_dir: Path, args: argparse.Namespace, config: Config, db: int
    ) -> None:
        self.servers = servers
        self.config = config
        self.mqtt_url = f"mqtt://127.0.0.1:{servers.mqtt.port}"
        self.redis_url = f"redis://127.0.0.1:{servers.redis.port}/{db}"
        self.prefix = f"bench{os.getpid()}{config.name}".replace("-", "")
        env = base_env(
            PARTSIGHT_MQTT_URL=self.mqtt_url,
            PARTSIGHT_REDIS_URL=self.redis_url,
            PARTSIGHT_TOPIC_PREFIX=self.prefix,
            PARTSIGHT_MODEL_DIR=str(model_dir),
            PARTSIGHT_LOG_LEVEL="warning",
            PARTSIGHT_DEVICE=args.device,
            PARTSIGHT_ENGINE=config.engine,
            PARTSIGHT_WINDOW_FRAMES=str(config.window_frames),
            PARTSIGHT_WINDOW_MS=str(args.window_ms),
            PARTSIGHT_MAX_QUEUE_LENGTH=str(args.max_queue),
            **({"PARTSIGHT_SHARE_GROUP": "bench"} if args.bridges > 1 else {}),
            **({"PARTSIGHT_INFERENCE_LANES": str(args.lanes)} if args.lanes else {}),
            **({"PARTSIGHT_MAX_BATCH_SIZE": str(args.batch)} if args.batch else {}),
            **({"PARTSIGHT_REVIEW_SAMPLE": str(args.review_sample)} if args.review_sample is not None else {}),
        )
        logs = work / config.name
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {}
        self.ports: dict[str, int] = {}
        for kind, count in (("worker", args.workers), ("bridge", args.bridges)):
            for index in range(count):
                name, port = f"{kind}{index}", free_port()
                own = {f"PARTSIGHT_{kind.upper()}_METRICS_PORT": str(port), f"PARTSIGHT_{kind.upper()}_ID": name}
                self.ports[name] = port
                self.procs[name] = partsight(kind, {**env, **own}, logs / f"{name}.log").start()
        for name, proc in self.procs.items():
            port = self.ports[name]
            wait_for(lambda p=proc, port=port: ready(port) or not p.alive, 180, f"{name} ready")  # type: ignore[misc]
            if not proc.alive:
                raise RuntimeError(f"{name} exited:\n{proc.log()[-2000:]}")

    def pids(self) -> dict[str, int]:
        """Every process of the run by name, Mosquitto and Redis included."""
        pids = {name: proc.process.pid for name, proc in self.procs.items() if proc.process is not None}
        for kind, server in (("mosquitto", self.servers.mqtt), ("redis", self.servers.redis)):
            if server.process is not None:
                pids[kind] = server.process.pid
        return pids

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of every process in the run, the benchmark's own camera included."""
        seconds = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        times = os.times()
        seconds["camera"] = times.user + times.system  # this process: the camera, its listener, the scrapes
        return seconds

    def of(self, kind: str) -> list[str]:
        return [name for name in self.procs if name.startswith(kind)]

    def rss(self, kind: str) -> float:
        pids = self.pids()
        return sum(rss_mib(pids[name]) for name in self.of(kind))

    def redis_memory_mib(self) -> float:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        return float(client.info("memory")["used_memory"]) / 2**20

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(30)

    def measure(
        self,
        label: str,
        jpegs: list[bytes],
        *,
        count: int,
        fps: float,
        window: int,
        cameras: int = 1,
        profile: Path | None = None,
    ) -> Run:
        """`cameras` devices stream side by side, each a share of the frames, the rate and the window; with
        `profile`, py-spy records the (first) worker meanwhile into that file."""
        from concurrent.futures import ThreadPoolExecutor
        from contextlib import nullcontext

        from bench.worker_profile import Recorder, cpu_ms_per_frame
        from broker.camera import Camera, Summary, stream
        from broker.settings import MqttSettings
        from broker.topics import Topics

        worker_ports = [self.ports[name] for name in self.of("worker")]
        bridge_ports = [self.ports[name] for name in self.of("bridge")]
        settings, topics = MqttSettings.from_url(self.mqtt_url), Topics(self.prefix)
        devices = [Camera(settings, topics, f"cam-{label}-{index}") for index in range(cameras)]
        for camera in devices:
            camera.__enter__()
        try:
            before = scrape_all(worker_ports)
            bridge_before = scrape_all(bridge_ports)
            cpu_before = self.cpu_by_process()
            recorder = Recorder(self.pids()[self.of("worker")[0]], profile) if profile else None
            with recorder or nullcontext(), ThreadPoolExecutor(cameras) as pool:
                parts = list(
                    pool.map(
                        lambda camera: stream(
                            camera,
                            jpegs,
                            count=count // cameras,
                            fps=fps / cameras,
                            window=max(1, window // cameras),
                            answer_timeout_s=60,
                        ),
                        devices,
                    )
                )
            cpu_after = self.cpu_by_process()
        finally:
            for camera in devices:
                camera.__exit__()
        summary = Summary(
            sent=sum(p.sent for p in parts),
            answers=[a for p in parts for a in p.answers],
            elapsed_s=max(p.elapsed_s for p in parts),
        )
        after = scrape_all(worker_ports)
        bridge_after = scrape_all(bridge_ports)

        def delta_bridge(name: str) -> float:
            key = (name, ())
            return bridge_after.get(key, 0.0) - bridge_before.get(key, 0.0)

        errors: dict[str, int] = {}
        for answer in summary.answers:
            if answer.is_error:
                code = str(answer.message["error"]["code"])
                errors[code] = errors.get(code, 0) + 1
        results = [a for a in summary.answers if not a.is_error]

        def delta(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        stages = {}
        for stage in STAGES:
            n = delta("partsight_worker_stage_seconds_count", stage=stage)
            stages[stage] = delta("partsight_worker_stage_seconds_sum", stage=stage) / n * 1000 if n else 0.0
        batches = delta("partsight_worker_batch_size_frames_count")
        windows = delta_bridge("partsight_bridge_window_frames_count")
        cpu = {
            kind: sum(cpu_after[n] - cpu_before[n] for n in cpu_after if n.startswith(kind))
            * 1000
            / max(1, summary.sent)
            for kind in ("bridge", "worker", "mosquitto", "redis", "camera")
        }
        first_worker = self.of("worker")[0]
        profile_ms = (
            cpu_ms_per_frame(
                recorder.samples(),
                max(1, summary.sent // len(self.of("worker"))),  # its share of the frames
                cpu_after[first_worker] - cpu_before[first_worker],
            )
            if recorder is not None
            else {}
        )
        return Run(
            label=label,
            sent=summary.sent,
            results=len(results),
            errors=errors,
            elapsed_s=summary.elapsed_s,
            latencies_ms=[a.latency_s * 1000 for a in results if a.latency_s is not None],
            stages_ms=stages,
            cpu_ms=cpu,
            mean_batch=delta("partsight_worker_batch_size_frames_sum") / batches if batches else 0.0,
            mean_window=delta_bridge("partsight_bridge_window_frames_sum") / windows if windows else 0.0,
            profile_ms=profile_ms,
        )


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def records_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """`table` of rows that are records with the same keys (the header); floats to three places."""
    shown = [tuple(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) for row in rows]
    return table(shown, tuple(rows[0]))


def main() -> int:
    from worker.settings import usable_cores

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="640x480,1920x1080", help="JPEG sizes, comma-separated")
    parser.add_argument("--windows", default="1,8,32", help="bridge window sizes (PARTSIGHT_WINDOW_FRAMES) to compare")
    parser.add_argument("--window-ms", type=float, default=5.0, help="PARTSIGHT_WINDOW_MS of the bridges")
    parser.add_argument("--frames", type=int, default=1500, help="frames in each closed-loop capacity run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each open-loop run")
    parser.add_argument("--window", type=int, default=64, help="frames in flight in the capacity runs")
    parser.add_argument("--engine", default="auto", help="the worker's engine for the model runs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--cameras", type=int, default=1, help="cameras streaming side by side")
    parser.add_argument("--bridges", type=int, default=1, help="bridge processes (a shared subscription)")
    parser.add_argument("--lanes", type=int, default=0, help="inference lanes per worker (default: the worker's)")
    parser.add_argument("--batch", type=int, default=0, help="max batch size (default: the worker's)")
    parser.add_argument("--max-queue", type=int, default=128, help="the bridge's queue bound (overload row)")
    parser.add_argument("--transport-frames", type=int, default=6000, help="frames in each transport-only run")
    parser.add_argument("--ceiling-seconds", type=float, default=4.0)
    parser.add_argument("--model-dir", help="a trained model (default: a small demo model trained now)")
    parser.add_argument(
        "--review-sample", type=float, help="PARTSIGHT_REVIEW_SAMPLE of the workers (0: no review queue)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more capacity run (first size, largest window) with py-spy on the worker: CPU-ms per frame by stage",
    )
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--skip-load-levels", action="store_true")
    parser.add_argument("--skip-overload", action="store_true")
    parser.add_argument("--skip-transport", action="store_true")
    parser.add_argument("--skip-model", action="store_true", help="the transport-only runs alone")
    args = parser.parse_args()
    if args.window >= args.max_queue:
        parser.error("--window must stay below --max-queue, or the capacity run measures refusals (overloaded)")
    windows = sorted({int(w) for w in args.windows.split(",")})

    work = Path(tempfile.mkdtemp(prefix="partsight-bench-"))
    model_dir = Path(args.model_dir) if args.model_dir else demo_model(work)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    jpegs = {size: sample_jpegs(24, size) for size in sizes}
    cores = usable_cores()

    ceilings: dict[tuple[int, int], tuple[int, float]] = {}
    if not args.skip_ceiling:
        for size in sizes:
            print(f"ceiling at {size[0]}x{size[1]}", file=sys.stderr)
            if args.device.startswith("cuda"):
                rates = gpu_ceiling(model_dir, jpegs[size], args.ceiling_seconds)
            else:
                rates = cpu_ceiling(model_dir, jpegs[size], cores, args.ceiling_seconds)
            best = max(rates, key=lambda b: rates[b])
            ceilings[size] = (best, rates[best])

    results = Results()
    servers = Servers.start(work)
    databases = iter(range(1, 16))
    try:
        for window in [] if args.skip_model else windows:
            stack = Stack(servers, work, model_dir, args, Config(args.engine, window), next(databases))
            try:
                measure_model(stack, args, sizes, jpegs, results, full=window == windows[-1])
            finally:
                stack.stop()
        if not args.skip_transport:
            for window in sorted({1, windows[-1]}):
                stack = Stack(servers, work, model_dir, args, Config(TRANSPORT_ONLY, window), next(databases))
                try:
                    first = jpegs[sizes[0]]
                    stack.measure("warm-transport", first, count=300, fps=0, window=args.window)
                    print(f"transport only, window {window}", file=sys.stderr)
                    results.transport[window] = stack.measure(
                        f"transport-{window}", first, count=args.transport_frames, fps=0, window=args.window
                    )
                finally:
                    stack.stop()
    finally:
        servers.stop()
    return _report(Measured(args, sizes, windows, jpegs, cores, ceilings, results))


@dataclass
class Results:
    capacity: dict[tuple[tuple[int, int], int], Run] = field(default_factory=dict)  # (size, window)
    levels: dict[tuple[int, int], list[Run]] = field(default_factory=dict)  # open loop, largest window
    overload: Run | None = None
    memory: dict[str, float] = field(default_factory=dict)
    transport: dict[int, Run] = field(default_factory=dict)  # by window
    profiled: Run | None = None  # a capacity run under py-spy (--profile)


def measure_model(
    stack: Stack,
    args: argparse.Namespace,
    sizes: list[tuple[int, int]],
    jpegs: dict[tuple[int, int], list[bytes]],
    results: Results,
    *,
    full: bool,
) -> None:
    """Capacity at every size; with `full`, open-loop latency levels and the overload row as well."""
    window = stack.config.window_frames
    for size in sizes:
        name = f"{size[0]}x{size[1]}"
        print(f"end to end at {name}, window {window}", file=sys.stderr)
        common = {"window": args.window, "cameras": args.cameras}
        stack.measure(f"warm-{name}", jpegs[size], count=min(100, args.frames), fps=0, **common)
        capacity = stack.measure(f"cap-{name}", jpegs[size], count=args.frames, fps=0, **common)
        results.capacity[(size, window)] = capacity
        if full and args.profile and size == sizes[0]:
            print(f"profiling the worker at {name}, window {window}", file=sys.stderr)
            out = Path(tempfile.mkdtemp(prefix="partsight-profile-")) / "worker.raw"
            results.profiled = stack.measure(
                f"profile-{name}", jpegs[size], count=args.frames, fps=0, profile=out, **common
            )
            print(f"  py-spy's stacks: {out}", file=sys.stderr)
        if full and not args.skip_load_levels:
            results.levels[size] = []
            for share in (0.5, 0.7, 1.0):
                rate = capacity.throughput * share
                count = max(50, int(rate * args.seconds))
                level = stack.measure(
                    f"{int(share * 100)}-{name}", jpegs[size], count=count, fps=rate, window=0, cameras=args.cameras
                )
                level.label = f"{int(share * 100)}%"
                results.levels[size].append(level)
    if not full or args.skip_overload:
        return
    first = sizes[0]
    results.memory = {
        "bridge_before": stack.rss("bridge"),
        "worker_before": stack.rss("worker"),
        "redis_before": stack.redis_memory_mib(),
    }
    measured = results.capacity[(first, window)].throughput
    rate = 3 * measured
    print(f"overload: {rate:.0f} frames/s against a capacity of {measured:.0f}", file=sys.stderr)
    results.overload = stack.measure(
        "overload", jpegs[first], count=int(rate * args.seconds), fps=rate, window=0, cameras=args.cameras
    )
    results.memory.update(
        bridge_after=stack.rss("bridge"), worker_after=stack.rss("worker"), redis_after=stack.redis_memory_mib()
    )


TRANSPORT_PARTS = ("bridge", "worker", "redis", "mosquitto")


@dataclass
class Measured:
    """Everything one run measured, as the report prints it."""

    args: argparse.Namespace
    sizes: list[tuple[int, int]]
    windows: list[int]
    jpegs: dict[tuple[int, int], list[bytes]]
    cores: int
    ceilings: dict[tuple[int, int], tuple[int, float]]
    results: Results


def _report(measured: Measured) -> int:
    args, sizes, windows, results = measured.args, measured.sizes, measured.windows, measured.results
    device = "GPU" if args.device.startswith("cuda") else f"{measured.cores}-core CPU"
    print(f"\n## partsight end to end, {device}; {args.workers} worker(s), {args.bridges} bridge(s)\n")
    if results.capacity:
        _report_model(measured)
    if results.profiled is not None:
        _report_profile(results.profiled, results.capacity[(sizes[0], windows[-1])], sizes[0], windows[-1])
    if results.transport:
        size = sizes[0]
        print(
            f"\nTransport only (engine `none`, {size[0]}x{size[1]} JPEGs, {args.window} in flight), CPU ms per frame:\n"
        )
        rows = []
        for window, run in sorted(results.transport.items()):
            transport = sum(run.cpu_ms[p] for p in TRANSPORT_PARTS)
            rows.append(
                (
                    str(window),
                    f"{run.throughput:.0f}",
                    *[f"{run.cpu_ms[p]:.3f}" for p in TRANSPORT_PARTS],
                    f"**{transport:.3f}**",
                    f"{1000 / transport:.0f}",
                    f"{run.cpu_ms['camera']:.3f}",
                    f"{run.mean_window:.1f}",
                )
            )
        head = ("window", "frames/s", *TRANSPORT_PARTS, "transport total", "f/s per transport core", "camera")
        print(table(rows, (*head, "mean window")))
    overload, memory = results.overload, results.memory
    if overload is not None:
        capacity = results.capacity[(sizes[0], windows[-1])]
        print(f"\nOverload: {sizes[0][0]}x{sizes[0][1]} at 3x capacity, bridge queue bound {args.max_queue}:\n")
        rows = [
            (
                "offered / answered with a result",
                f"{overload.sent / overload.elapsed_s:.0f} / {overload.throughput:.0f} f/s",
            ),
            ("frames sent / results / errors", f"{overload.sent} / {overload.results} / {overload.errors or 'none'}"),
            (
                "admitted frames p50 / p99 (at capacity: closed loop)",
                f"{pct(overload.latencies_ms, 50):.0f} / {pct(overload.latencies_ms, 99):.0f} ms "
                f"({pct(capacity.latencies_ms, 50):.0f} / {pct(capacity.latencies_ms, 99):.0f} ms)",
            ),
            ("RSS bridge before / after", f"{memory['bridge_before']:.0f} / {memory['bridge_after']:.0f} MiB"),
            ("RSS worker(s) before / after", f"{memory['worker_before']:.0f} / {memory['worker_after']:.0f} MiB"),
            ("Redis used memory before / after", f"{memory['redis_before']:.1f} / {memory['redis_after']:.1f} MiB"),
            ("answered / sent", f"{overload.results + sum(overload.errors.values())} / {overload.sent}"),
        ]
        print(table(rows, ("measure", "value")))
    every = [*results.capacity.values(), *(r for runs in results.levels.values() for r in runs)]
    every += [*results.transport.values(), *([overload] if overload else [])]
    lost = [run for run in every if run.results + sum(run.errors.values()) != run.sent]
    return 1 if lost else 0


def _report_model(measured: Measured) -> None:
    """Capacity against the ceiling, open-loop latency, CPU per frame and the worker's stages."""
    args, sizes, windows, jpegs = measured.args, measured.sizes, measured.windows, measured.jpegs
    cores, ceilings, results = measured.cores, measured.ceilings, measured.results
    rows: list[tuple[str, ...]] = []
    for size in sizes:
        mean_kib = sum(map(len, jpegs[size])) / len(jpegs[size]) / 1024
        batch, ceiling = ceilings.get(size, (0, float("nan")))
        for window in windows:
            capacity = results.capacity[(size, window)]
            rows.append(
                (
                    f"{size[0]}x{size[1]} ({mean_kib:.0f} KiB)",
                    str(window),
                    f"{ceiling:.1f} (batch {batch})",
                    f"{capacity.throughput:.1f}",
                    f"**{capacity.throughput / ceiling:.2f}**",
                    f"{capacity.results} + {sum(capacity.errors.values())} / {capacity.sent}",
                    f"{pct(capacity.latencies_ms, 50):.0f} / {pct(capacity.latencies_ms, 99):.0f} ms",
                    f"{capacity.mean_window:.1f} / {capacity.mean_batch:.1f}",
                )
            )
    header = ("JPEG", "window", "ceiling f/s", "end to end f/s", "ratio", "results + errors / sent")
    print(table(rows, (*header, f"p50 / p99 ({args.window} in flight)", "mean window / batch")))
    if results.levels:
        print(f"\nOpen-loop latency at a share of the measured capacity (window {windows[-1]}, results only):\n")
        rows = []
        for size in sizes:
            for run in results.levels.get(size, []):
                p50, p99 = pct(run.latencies_ms, 50), pct(run.latencies_ms, 99)
                rows.append(
                    (
                        f"{size[0]}x{size[1]}",
                        run.label,
                        f"{run.sent / run.elapsed_s:.1f}",
                        f"{run.results}/{run.sent}",
                        f"{p50:.0f} ms",
                        f"{p99:.0f} ms",
                        f"{p99 / p50:.1f}",
                        ", ".join(f"{k} {v}" for k, v in run.errors.items()) or "none",
                    )
                )
        print(table(rows, ("JPEG", "load", "offered f/s", "results", "p50", "p99", "p99/p50", "errors")))
    print("\nCPU per frame (ms, capacity runs; the model alone at its ceiling for comparison):\n")
    parts = ("worker", "bridge", "mosquitto", "redis", "camera")
    rows = []
    for size in sizes:
        model = (1 if args.device.startswith("cuda") else cores) * 1000 / ceilings.get(size, (0, float("nan")))[1]
        for window in windows:
            cpu = results.capacity[(size, window)].cpu_ms
            rows.append(
                (
                    f"{size[0]}x{size[1]}",
                    str(window),
                    f"{model:.1f}",
                    *[f"{cpu[p]:.2f}" for p in parts],
                    f"{sum(cpu.values()):.1f}",
                )
            )
    print(table(rows, ("JPEG", "window", "model at ceiling", *parts, "total")))
    print("\nWhere a frame's time goes in the worker (mean ms, capacity runs):\n")
    rows = [
        (f"{size[0]}x{size[1]}", str(window), *[f"{results.capacity[(size, window)].stages_ms[s]:.1f}" for s in STAGES])
        for size in sizes
        for window in windows
    ]
    print(table(rows, ("JPEG", "window", *STAGES)))


def _report_profile(profiled: Run, capacity: Run, size: tuple[int, int], window: int) -> None:
    """Each CPU-ms of a frame: the worker's by stage (py-spy), then the other processes (from /proc)."""
    print(
        f"\nWhere each CPU-ms of a frame goes ({size[0]}x{size[1]}, window {window}, under py-spy: "
        f"{profiled.throughput:.1f} f/s against {capacity.throughput:.1f} without it):\n"
    )
    total = sum(profiled.cpu_ms.values())
    rows = [(f"worker: {stage}", f"{ms:.2f}", f"{ms / total:.0%}") for stage, ms in profiled.profile_ms.items()]
    rows += [
        (name, f"{profiled.cpu_ms[name]:.2f}", f"{profiled.cpu_ms[name] / total:.0%}")
        for name in ("bridge", "mosquitto", "redis", "camera")
    ]
    rows.append(("total", f"{total:.2f}", "100%"))
    print(table(rows, ("where", "CPU-ms per frame", "share")))


if __name__ == "__main__":
    sys.exit(main())
