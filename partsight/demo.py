"""`partsight demo`: the whole service on one machine, with nothing to configure.

Starts (or embeds) an MQTT broker and Redis, trains a demo model from real Fashion-MNIST product photos
once, runs the bridge and a worker as separate processes, then replays held-out photos as a camera and
prints every answer live. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.camera import Answer, Camera, percentile, stream
from broker.settings import MqttSettings
from broker.topics import Topics
from models.bundle import load_model
from models.errors import ArtifactError
from models.train import datasets, parts
from partsight.embedded import Embedded, free_port, start_mqtt, start_redis
from partsight.errors import NotReady

DEVICE = "demo-camera-1"
DEMO_PARTS = 16  # two look-alikes of each of the eight families
NEVER_SEEN_PARTS = 4  # the next four of the catalog: look-alikes the model was never taught
NEVER_SEEN = "(never seen)"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path
    frames: int = 0
    fps: float = 4.0
    train_per_product: int = 30
    embedded_only: bool = False
    open_browser: bool = True  # open the operator page where there is a desktop to show it
    data: str = "fashion"  # Fashion-MNIST's products, or the drawn look-alike parts (models.train.parts)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:  # not listening yet, or 503 (urllib raises HTTPError, an OSError)
        return False


def _wait_ready(process: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotReady(f"the {what} exited ({process.returncode}); see {log}")
        if _ready(port):
            return
        time.sleep(0.2)
    raise NotReady(f"the {what} was not ready after 180 s; see {log}")


def ensure_model(workdir: Path, per_product: int, data: str = "fashion") -> Path:
    store = workdir / ("model" if data == "fashion" else f"model-{data}")
    try:
        bundle = load_model(store)
        if "enrolment_base" in bundle.manifest:
            print(f"  model   {bundle.name} {bundle.version} (reused from {store})")
            return store
        print(f"  model   {bundle.version} was trained before enrolment: training a new one")
    except ArtifactError:
        pass
    # lazy: torch and scikit-learn only when there is no demo model yet (a reused one needs neither here)
    from models.train.trainer import TrainOptions, train  # noqa: PLC0415

    images = workdir / f"training-images-{data}"
    if data == "parts":
        print(f"  model   training on {per_product} drawn photos of each of {DEMO_PARTS} look-alike parts (once)")
        parts.export_training_folder(images, products=DEMO_PARTS, per_product=per_product)
        records = list(parts.catalog(DEMO_PARTS).values())
    else:
        debian = datasets.debian_available()
        source = "Debian's dataset-fashion-mnist" if debian else "the sample shipped with partsight"
        print(f"  model   training on {per_product} photos per product from {source} (once; reused next time)")
        datasets.export_training_folder(images, per_class=per_product)
        records = list(datasets.catalog().values())
    catalog = workdir / f"catalog-{data}.json"
    catalog.write_text(json.dumps(records, indent=2))
    train(TrainOptions(images=images, catalog=catalog, out=store, name=f"{data}-demo"))
    return store


def camera_photos(workdir: Path, data: str) -> list[tuple[Path, str]]:
    """The photos the demo's camera replays, with their true products: held-out photos of the taught products,
    and for the parts a few never-seen look-alikes too (a right answer for those is `unknown`)."""
    if data == "fashion":
        return datasets.export_camera_folder(workdir / "camera", per_class=5)
    folder = workdir / "camera-parts"
    known = parts.export_camera_folder(folder, products=DEMO_PARTS, per_product=3)
    unseen = parts.export_camera_folder(folder, products=NEVER_SEEN_PARTS, per_product=2, start=DEMO_PARTS)
    mixed = known + [(path, NEVER_SEEN) for path, _ in unseen]
    return sorted(mixed, key=lambda pair: pair[0].name)


def _start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    argv = [sys.executable, "-m", "partsight.cli", command]
    return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def frame_id_of(index: int) -> str:
    return f"f{index + 1:05d}"


class FrameIds:
    """`frame_id_of` for the stream, counting the frames it names: how many were sent when Ctrl-C stops it."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, index: int) -> str:
        self.sent = max(self.sent, index + 1)
        return frame_id_of(index)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the demo showed: frames sent, and its answers against the true products."""

    sent: int
    right: int
    wrong: int
    unknown: int
    errors: int
    latencies_ms: tuple[float, ...]
    elapsed_s: float = 0.0
    unseen: int = 0  # answers to photos of never-seen look-alikes (wrong unless unknown)
    unseen_refused: int = 0  # of those, answered unknown

    @property
    def answered(self) -> int:
        return self.right + self.wrong + self.unknown + self.errors

    def lines(self) -> list[str]:
        lat = self.latencies_ms
        latency = f"latency ms: p50 {percentile(lat, 50):.1f}  p99 {percentile(lat, 99):.1f}" if lat else "latency: -"
        return [
            f"sent {self.sent} frames in {self.elapsed_s:.1f} s, answered {self.answered}: {self.right} right, "
            f"{self.wrong} wrong, {self.unknown} unknown, {self.errors} errors",
            latency,
            *([f"never-seen look-alikes: {self.unseen_refused} of {self.unseen} answered unknown"] * bool(self.unseen)),
        ]


def summarize(sent: int, answers: Sequence[Answer], truth: Callable[[str], str], elapsed_s: float = 0.0) -> DemoSummary:
    """Count the answers: right or wrong product, unknown (no product), error."""
    right = wrong = unknown = errors = unseen = unseen_refused = 0
    for answer in answers:
        never_seen = truth(str(answer.frame_id)) == NEVER_SEEN
        unseen += never_seen and not answer.is_error
        unseen_refused += never_seen and not answer.is_error and answer.message.get("product") is None
        if answer.is_error:
            errors += 1
        elif answer.message.get("product") is None:
            unknown += 1
        elif answer.message["product"] == truth(str(answer.frame_id)):
            right += 1
        else:
            wrong += 1
    latencies = tuple(a.latency_s * 1000 for a in answers if a.latency_s is not None)
    return DemoSummary(sent, right, wrong, unknown, errors, latencies, elapsed_s, unseen, unseen_refused)


def _truth(photos: list[tuple[Path, str]]) -> Callable[[str], str]:
    """The true product of a demo frame, from its id: frame f00001 shows photo 0, and so on, cycling."""

    def product_of(frame_id: str) -> str:
        try:
            return photos[(int(frame_id[1:]) - 1) % len(photos)][1]
        except ValueError:
            return "?"

    return product_of


def _printer(truth: Callable[[str], str]):  # type: ignore[no-untyped-def]
    print(
        f"\n  {'frame':<8} {'truth':<12} {'answer':<12} {'category':<10} {'conf':>5} {'novel':>5} {'latency':>9}"
        "  nearest enrolled photo"
    )

    def show(answer: Answer) -> None:
        message = answer.message
        frame = str(message.get("frame_id"))
        latency = f"{answer.latency_s * 1000:7.1f}ms" if answer.latency_s is not None else "        ?"
        expected = truth(frame)
        if answer.is_error:
            print(f"  {frame:<8} {expected:<12} ERROR {message['error']['code']}: {message['error']['message']}")
            return
        product = message["product"] or "unknown"
        if message["product"] is None:
            mark = " ok" if expected == NEVER_SEEN else ""
        else:
            mark = " ok" if message["product"] == expected else " x"
        category = str(message["category"] or "-")
        novelty = message.get("novelty")
        novel = f"{novelty:5.2f}" if isinstance(novelty, float | int) else "    -"
        matches = message.get("matches") or []
        nearest = f"  {matches[0]['photo']} ({matches[0]['similarity']:.2f})" if matches else ""
        print(
            f"  {frame:<8} {expected:<12} {product:<12} {category:<10} {message['confidence']:5.2f} {novel} "
            f"{latency}{mark:<3}{nearest}"
        )

    return show


def can_show_a_page() -> bool:
    """A desktop to open a browser on: a display on Linux, or macOS and Windows."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def start_api(env: dict[str, str], protocol: str, log: Path, *, open_browser: bool) -> subprocess.Popen[bytes] | None:
    """`partsight api` on a free loopback port, its operator page printed (and opened where it can be)."""
    if protocol != "5":
        print("  page    not started: the HTTP API needs MQTT 5 (install mosquitto); the embedded broker is 3.1.1")
        return None
    port = free_port()
    api = _start("api", {**env, "PARTSIGHT_API_PORT": str(port), "PARTSIGHT_API_ID": "demo-api"}, log)
    _wait_ready(api, port, "API", log)
    url = f"http://127.0.0.1:{port}/ui"
    print(f"  page    {url}  (the operator page: review queue, new products, model versions; API docs at /docs)")
    if open_browser and can_show_a_page():
        webbrowser.open(url)
    return api


def service_env(mqtt: Embedded, redis: Embedded, store: Path, *, bridge_port: int, worker_port: int) -> dict[str, str]:
    """The environment of the demo's bridge, worker and API: this one without its PARTSIGHT_* settings, plus theirs."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARTSIGHT_")},
        "PARTSIGHT_MQTT_URL": mqtt.url,
        "PARTSIGHT_MQTT_PROTOCOL": mqtt.protocol,
        "PARTSIGHT_REDIS_URL": redis.url,
        "PARTSIGHT_MODEL_DIR": str(store),
        "PARTSIGHT_BRIDGE_METRICS_PORT": str(bridge_port),
        "PARTSIGHT_WORKER_METRICS_PORT": str(worker_port),
        "PARTSIGHT_BRIDGE_ID": "demo-bridge",
        "PARTSIGHT_WORKER_ID": "demo-worker",
        "PARTSIGHT_LOG_LEVEL": "warning",
    }


def run_demo(options: DemoOptions) -> int:
    workdir = options.workdir.resolve()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print("partsight demo")
    mqtt: Embedded | None = None
    redis: Embedded | None = None
    bridge = worker = api = None
    try:
        mqtt = start_mqtt(workdir / "mqtt", prefer_binary=not options.embedded_only)
        print(f"  MQTT    {mqtt.kind} at {mqtt.url} (MQTT {mqtt.protocol})")
        redis = start_redis(workdir / "redis", prefer_binary=not options.embedded_only)
        print(f"  Redis   {redis.kind} at {redis.url}")
        store = ensure_model(workdir, options.train_per_product, options.data)
        photos = camera_photos(workdir, options.data)
        bridge_port, worker_port = free_port(), free_port()
        env = service_env(mqtt, redis, store, bridge_port=bridge_port, worker_port=worker_port)
        worker = _start("worker", env, logs / "worker.log")
        bridge = _start("bridge", env, logs / "bridge.log")
        _wait_ready(worker, worker_port, "worker", logs / "worker.log")
        _wait_ready(bridge, bridge_port, "bridge", logs / "bridge.log")
        print(f"  metrics bridge http://127.0.0.1:{bridge_port}/metrics, worker http://127.0.0.1:{worker_port}/metrics")
        api = start_api(env, mqtt.protocol, logs / "api.log", open_browser=options.open_browser)
        count = options.frames or 10**9
        print(f"  camera  {DEVICE} replays {len(photos)} held-out photos at {options.fps:g} fps; Ctrl-C stops")
        images = [path.read_bytes() for path, _ in photos]
        truth = _truth(photos)
        settings = MqttSettings.from_url(mqtt.url, protocol=mqtt.protocol)
        frame_ids = FrameIds()
        with Camera(settings, Topics(), DEVICE, on_answer=_printer(truth)) as camera:
            started = time.perf_counter()
            try:
                stream(camera, images, count=count, fps=options.fps, frame_id_of=frame_ids)
            except KeyboardInterrupt:
                print("\n  stopping")
            elapsed_s = time.perf_counter() - started
            answers = list(camera.answers)
        print()
        for line in summarize(frame_ids.sent, answers, truth, elapsed_s).lines():
            print("  " + line)
        return 0
    except KeyboardInterrupt:
        print("\n  stopping")
        return 130
    finally:
        _stop(api)
        _stop(bridge)
        _stop(worker)
        if redis:
            redis.stop()
        if mqtt:
            mqtt.stop()
