"""Worker settings, read once at start-up from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker.errors import SettingsError
from broker.settings import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_REDIS_URL,
    MqttSettings,
    env_float,
    env_int,
    mqtt_from_env,
    redis_url_from_env,
)
from models.answer.object_rule import DEFAULT_AGREE, DEFAULT_MAX_FRAMES
from models.errors import ReviewError
from models.store.retention import DEFAULT_KEEP_VERSIONS, keep_from_env
from models.store.review_location import DEFAULT_REVIEW, ReviewSettings
from models.store.review_store import ReviewStore
from models.store.versions import DEFAULT_STORE
from worker.object_tracker import ObjectSettings

# `none` answers every frame unknown without decode or features: the transport's own ceiling, asked for by name
# only (never chosen by `auto`). The others are models.extract.engines.ENGINE_CHOICES (a test keeps them equal).
TRANSPORT_ONLY_ENGINE = "none"
ENGINES = ("auto", "onnxruntime", "torch", TRANSPORT_ONLY_ENGINE)
# Measured on a 2-core box: ONNX Runtime, one process per core, decodes and runs 155, 152, 157 and 144
# frames/s at batch 1, 2, 4 and 8, and end to end batch 4 amortises per-batch Python work (torch earlier:
# 77-82 frames/s at batch 4 against 58-60 at batch 2), so CPU workers batch a little; a GPU wants large
# batches (H100: 1,349 frames/s at batch 8, 4,022 at 32, 6,076 at 128, decode included).
CPU_MAX_BATCH = 4
GPU_MAX_BATCH = 32
# ONNX Runtime releases the GIL: one lane (a batch in flight, one intra-op thread) per core uses the box.
# Measured end to end on 2 cores, three alternated runs each: one process with 2 lanes 87-107 frames/s,
# two processes with one lane each 96-101; one process holds one model (260 MiB) instead of two, so
# one worker process per box, one lane per core.
# On a GPU a second lane prepares and copies the next batch while one computes.
GPU_LANES = 2
DEFAULT_MATCHES = 3  # nearest enrolled photos a result names (PARTSIGHT_MATCHES; 0: none)
MAX_MATCHES = 50
DEFAULT_REVIEW_MARGIN = 0.1
# an MQTT device sends a product's photos one message each: those within 2 s become one version, not one each
DEFAULT_ENROL_WINDOW_S = 2.0
DEFAULT_CONSOLIDATE_AFTER_S = 10.0
DEFAULT_OBJECTS = ObjectSettings()
MIN_OBJECT_KEEP_S = 300  # a decided object's event waits in its hash: kept at least this long for a broker outage


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def gpu_expected(device: str) -> bool:
    """Whether the worker will run on a GPU, judged without touching CUDA (settings are read before any fork)."""
    return device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    mqtt: MqttSettings
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    topic_prefix: str = "partsight"
    model_dir: Path = Path(DEFAULT_STORE)
    backbone_weights: Path | None = None
    device: str = "auto"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_pixels: int = 40_000_000
    engine: str = "auto"
    max_batch_size: int = 8
    max_batch_wait_ms: float = 5.0
    inference_lanes: int = 1
    lane_threads: int = 1  # threads each lane's engine and the answer path's BLAS/OpenMP pools may use
    concurrency: int = 16
    max_frames_in_flight: int = 32
    metrics_port: int = 9302
    worker_id: str = "worker"
    visibility_timeout_s: int = 60
    claim_ttl_s: int = 10
    dedupe_ttl_s: int = 24 * 3600
    publish_timeout_s: float = 10.0
    model_reload_s: float = 10.0  # how often the store's `current` is looked at; 0: never reload
    matches: int = DEFAULT_MATCHES  # nearest enrolled photos each result names; 0: none
    review: ReviewSettings = DEFAULT_REVIEW  # a directory, or an s3:// bucket, and its bounds
    review_sample: float = 1.0  # share of eligible frames kept for review; 0: the review queue is off
    review_margin: float = DEFAULT_REVIEW_MARGIN  # a recognised frame whose two best scores are closer is kept
    enrol: bool = True  # consume the partsight.enrol queue beside the frames' (PARTSIGHT_WORKER_ENROL=0: frames only)
    keep_versions: int = DEFAULT_KEEP_VERSIONS  # newest versions a prune after each enrolment keeps (and more)
    enrol_window_s: float = DEFAULT_ENROL_WINDOW_S  # photos of a product arriving this close become one version
    # seconds after a quick enrolment its consolidation starts (enrolments meanwhile are folded in with it)
    consolidate_after_s: float = DEFAULT_CONSOLIDATE_AFTER_S
    objects: ObjectSettings = DEFAULT_OBJECTS  # frames of one part, one decision (PARTSIGHT_OBJECT_*)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        device = env.get("PARTSIGHT_DEVICE", "auto")
        default_batch = GPU_MAX_BATCH if gpu_expected(device) else CPU_MAX_BATCH
        max_batch = env_int(env, "PARTSIGHT_MAX_BATCH_SIZE", default_batch, minimum=1)
        default_lanes = GPU_LANES if gpu_expected(device) else usable_cores()
        lanes = env_int(env, "PARTSIGHT_INFERENCE_LANES", default_lanes, minimum=1)
        visibility = env_int(env, "PARTSIGHT_VISIBILITY_TIMEOUT_S", 60, minimum=2)
        weights = env.get("PARTSIGHT_BACKBONE_WEIGHTS")
        model_dir = Path(env.get("PARTSIGHT_MODEL_DIR", DEFAULT_STORE))
        publish_timeout_s = env_float(env, "PARTSIGHT_PUBLISH_TIMEOUT_S", 10.0, minimum=0.1)
        return cls(
            mqtt=mqtt_from_env(env),
            redis_url=redis_url_from_env(env),
            topic_prefix=env.get("PARTSIGHT_TOPIC_PREFIX", "partsight"),
            model_dir=model_dir,
            backbone_weights=Path(weights) if weights else None,
            device=device,
            max_payload_bytes=env_int(env, "PARTSIGHT_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES, minimum=1),
            max_pixels=env_int(env, "PARTSIGHT_MAX_PIXELS", 40_000_000, minimum=1),
            engine=engine_from_env(env),
            max_batch_size=max_batch,
            inference_lanes=lanes,
            lane_threads=env_int(env, "PARTSIGHT_LANE_THREADS", 1, minimum=1),
            max_batch_wait_ms=env_float(env, "PARTSIGHT_MAX_BATCH_WAIT_MS", 5.0),
            concurrency=env_int(env, "PARTSIGHT_WORKER_CONCURRENCY", max(8, 2 * max_batch * lanes), minimum=1),
            max_frames_in_flight=env_int(env, "PARTSIGHT_WORKER_MAX_FRAMES", max(32, 4 * max_batch * lanes), minimum=1),
            metrics_port=env_int(env, "PARTSIGHT_WORKER_METRICS_PORT", 9302),
            worker_id=env.get("PARTSIGHT_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}",
            visibility_timeout_s=visibility,
            claim_ttl_s=env_int(env, "PARTSIGHT_CLAIM_TTL_S", max(1, min(10, visibility // 2)), minimum=1),
            dedupe_ttl_s=env_int(env, "PARTSIGHT_DEDUPE_TTL_S", 24 * 3600, minimum=1),
            model_reload_s=env_float(env, "PARTSIGHT_MODEL_RELOAD_S", 10.0),
            publish_timeout_s=publish_timeout_s,
            matches=matches_from_env(env),
            review=ReviewSettings.from_env(env, model_dir),
            review_sample=review_sample_from_env(env),
            enrol=env_flag(env, "PARTSIGHT_WORKER_ENROL", True),
            review_margin=env_float(env, "PARTSIGHT_REVIEW_MARGIN", DEFAULT_REVIEW_MARGIN),
            keep_versions=keep_from_env(env),
            enrol_window_s=env_float(env, "PARTSIGHT_ENROL_WINDOW_S", DEFAULT_ENROL_WINDOW_S),
            consolidate_after_s=env_float(env, "PARTSIGHT_CONSOLIDATE_AFTER_S", DEFAULT_CONSOLIDATE_AFTER_S),
            objects=objects_from_env(env, publish_timeout_s=publish_timeout_s),
        )

    @property
    def review_enabled(self) -> bool:
        """The review queue runs unless sampled to nothing; the transport-only engine has nothing to review."""
        return self.review_sample > 0 and self.engine != TRANSPORT_ONLY_ENGINE


def objects_from_env(env: Mapping[str, str], *, publish_timeout_s: float) -> ObjectSettings:
    agree = env_int(env, "PARTSIGHT_OBJECT_AGREE", DEFAULT_AGREE, minimum=1)
    max_frames = env_int(env, "PARTSIGHT_OBJECT_MAX_FRAMES", DEFAULT_MAX_FRAMES, minimum=1)
    if agree > max_frames:
        raise SettingsError(
            f"PARTSIGHT_OBJECT_AGREE ({agree}) must not exceed PARTSIGHT_OBJECT_MAX_FRAMES ({max_frames})"
        )
    return ObjectSettings(
        gap_s=env_int(env, "PARTSIGHT_OBJECT_GAP_MS", 700, minimum=1) / 1000,
        agree=agree,
        max_frames=max_frames,
        keep_s=env_int(env, "PARTSIGHT_OBJECT_KEEP_S", 3600, minimum=MIN_OBJECT_KEEP_S),
        auto=env_flag(env, "PARTSIGHT_OBJECT_AUTO", True),
        lease_s=2 * publish_timeout_s + 10.0,
    )


def engine_from_env(env: Mapping[str, str]) -> str:
    engine = env.get("PARTSIGHT_ENGINE", "auto")
    if engine not in ENGINES:
        raise SettingsError(f"PARTSIGHT_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def matches_from_env(env: Mapping[str, str]) -> int:
    matches = env_int(env, "PARTSIGHT_MATCHES", DEFAULT_MATCHES, minimum=0)
    if matches > MAX_MATCHES:
        raise SettingsError(f"PARTSIGHT_MATCHES must be at most {MAX_MATCHES}, got {matches}")
    return matches


def review_sample_from_env(env: Mapping[str, str]) -> float:
    sample = env_float(env, "PARTSIGHT_REVIEW_SAMPLE", 1.0)
    if sample > 1:
        raise SettingsError(f"PARTSIGHT_REVIEW_SAMPLE must be at most 1, got {sample}")
    return sample


def open_review_store(settings: WorkerSettings) -> ReviewStore | None:
    """The review store, created and checked writable; None when the queue is off. A directory that cannot be
    created or written, or a bucket that is missing, unreachable or refuses the credentials, is a SettingsError,
    so the worker refuses to start as it does for any bad setting."""
    if not settings.review_enabled:
        return None
    where = settings.review.location
    inside = isinstance(where, Path) and where.is_relative_to(settings.model_dir)
    if inside and not settings.model_dir.exists():  # a wrong path: say so, and create nothing there
        raise SettingsError(
            f"PARTSIGHT_MODEL_DIR {settings.model_dir} does not exist: point it at the model store "
            "(the folder `partsight train --out` writes)"
        )
    try:
        store = settings.review.open()
        store.check_writable()
    except ReviewError as exc:
        fix = "name a writable directory, or" if isinstance(where, Path) else "or"
        raise SettingsError(f"PARTSIGHT_REVIEW_STORE: {exc}; {fix} set PARTSIGHT_REVIEW_SAMPLE=0") from exc
    return store


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false), got {raw!r}")
