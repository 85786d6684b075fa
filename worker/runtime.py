"""Everything a worker process holds once: model, batcher, ledger, MQTT publisher, review writer, metrics.

Built lazily in the process that runs tasks (after any fork), so CUDA is never touched in a parent.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client import CollectorRegistry, ProcessCollector
from threadpoolctl import threadpool_limits

from broker.contract import MODEL_CHANNEL
from broker.dispatch import announce_current, redis_client_url
from broker.errors import PublishFailed
from broker.framestore import FrameStore
from broker.http import serve
from broker.line_rankers import record_state
from broker.mqtt import MqttConnection
from broker.topics import Topics
from models.answer.gallery import Gallery
from models.answer.head import Decision
from models.answer.line_scope import LineScope
from models.answer.novelty import NoveltyModel
from models.answer.object_rule import ObjectRule
from models.answer.same_product import same_product_similarity
from models.bundle import served_signature
from models.errors import EnrolmentError, ImageError
from models.extract.decode import DecodeLimits
from models.extract.threads import pin_thread_pools
from models.recognizer import Recognizer
from models.store.plant_lines import LinesView
from models.store.review_store import ReviewStore
from models.store.versions import CURRENT, MANIFEST, use_redis_lock
from models.store.writer_lock import RedisStoreLocks
from models.train.line_ranker import LineRankerFits
from worker.batcher import MicroBatcher
from worker.budget import FrameBudget
from worker.consolidator import Consolidator
from worker.enrolment_tasks import EnrolmentRunner
from worker.errors import ModelUnavailable
from worker.ledger import FrameLedger
from worker.line_filter import LineScopes
from worker.metrics import WorkerMetrics
from worker.object_book import ObjectBook
from worker.object_grouping import AutoGrouping
from worker.object_tracker import AUTO_KEEP_S, Decided, ObjectTracker
from worker.objects import Objects
from worker.pipeline import FramePipeline, ModelInfo, ServedModel, features_by_model
from worker.publisher import AnswerPublisher
from worker.reload import ModelReloader, ModelSlot, ReloadSignal
from worker.review_sink import NoReview, ReviewSink
from worker.settings import DEFAULT_MATCHES, TRANSPORT_ONLY_ENGINE, WorkerSettings, open_review_store

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: WorkerSettings
    model: ModelSlot
    reloader: ModelReloader
    batcher: MicroBatcher[Any, np.ndarray | ImageError]
    connection: MqttConnection
    pipeline: FramePipeline
    metrics: WorkerMetrics
    registry: CollectorRegistry
    probes: dict[str, Callable[[], bool]]
    review: ReviewSink | NoReview = field(default_factory=NoReview)
    enrolments: EnrolmentRunner | None = None  # None: this worker cannot enrol (enrolment_problem says why)
    signal: ReloadSignal | None = None
    enrolment_problem: str | None = None
    consolidator: Consolidator | None = None  # with enrolments: folds quick enrolments into the head
    objects: Objects | None = None  # frames of one part to one decision, and its sweeper
    line_scopes: LineScopes | None = None  # how frames on a line are answered, and their rankers' fitting thread

    @classmethod
    def build(cls, settings: WorkerSettings, *, serve_metrics: bool = True) -> Runtime:  # long: every part, in order
        """Metrics and health first, then the model, the batcher, MQTT, Redis and the pipeline, then the reload
        signal and enrolments: everything a worker process serves with, from its settings."""
        registry, metrics, probes = _observability(settings, serve_metrics)
        pin_lane_pools(settings)
        review_store = open_review_store(settings)  # checked before anything connects (app.py checked it too)
        load = _model_loader(settings)
        describe = functools.partial(_describe, metrics)
        slot = _first_model(settings, load)
        describe(slot.model)
        _model_metrics(settings, slot, metrics, registry)
        reloader = _reloader(settings, slot, load, metrics, on_loaded=describe)
        batcher = _batcher(settings, metrics)
        topics = Topics(settings.topic_prefix)
        connection = _connection(settings, topics, metrics)
        connection.start()
        redis_client = redis.Redis.from_url(redis_client_url(settings.redis_url), socket_timeout=5)
        review = _review_sink(settings, review_store, metrics)
        lines = LinesView(model_store_of(settings.model_dir) or settings.model_dir, clock=time.monotonic)
        objects = _objects(
            settings, client=redis_client, connection=connection, topics=topics, slot=slot, metrics=metrics
        )
        line_scopes = _line_scopes(settings, metrics, redis_client)
        pipeline = FramePipeline(
            model=slot.get,
            lines=lines.current,
            line_scopes=line_scopes,
            batcher=batcher,
            ledger=FrameLedger(redis_client, claim_ttl_s=settings.claim_ttl_s, done_ttl_s=settings.dedupe_ttl_s),
            frames=FrameStore(redis_client, data_ttl_s=settings.dedupe_ttl_s, clock=time.time),
            publisher=AnswerPublisher(connection, topics, timeout_s=settings.publish_timeout_s),
            metrics=metrics,
            max_payload_bytes=settings.max_payload_bytes,
            budget=FrameBudget(settings.max_frames_in_flight),
            review=review,
            objects=objects,
        )
        objects.start()
        probes.update(model=lambda: True, mqtt=lambda: connection.connected, redis=lambda: _answers(redis_client))
        probes["accepting"] = lambda: True
        reloader.start()
        signal = _reload_signal(settings, reloader, lines)
        enrolments, problem = _enrolments(
            settings,
            slot,
            load=load,
            metrics=metrics,
            announce=functools.partial(announce_current, redis_client),
            reload_now=reloader.check,
            connection=connection,
            topics=topics,
        )
        consolidator = None
        if enrolments is not None:
            consolidator = Consolidator(
                settings.model_dir,
                keep_versions=settings.keep_versions,
                reload_now=reloader.check,
                announce=functools.partial(announce_current, redis_client),
                # the child takes the store's writer lock in the same Redis as this worker's enrolments
                env={**os.environ, "PARTSIGHT_REDIS_URL": settings.redis_url},
            )
        return cls(
            settings,
            slot,
            reloader,
            batcher,
            connection,
            pipeline,
            metrics,
            registry,
            probes,
            review,
            enrolments,
            signal,
            problem,
            consolidator,
            objects,
            line_scopes,
        )

    def stop_accepting(self) -> None:
        """/readyz turns false: the worker is draining (it takes no new task, finishes what it holds)."""
        self.probes["accepting"] = lambda: False

    def close(self) -> None:
        self.stop_accepting()
        self.reloader.stop()
        if self.signal is not None:
            self.signal.stop()
        self.batcher.close()
        if self.line_scopes is not None:
            self.line_scopes.close()
        if self.objects is not None:
            self.objects.stop()
        self.review.close()  # frames already answered: finish writing them (bounded), then stop the writer
        self.connection.stop()
        if self.objects is not None:  # the PUBACKs that came while the connection closed
            self.objects.take_confirmed_quietly()


def _line_scopes(settings: WorkerSettings, metrics: WorkerMetrics, client: redis.Redis) -> LineScopes:
    """Lines answered among their products, each ranked by a classifier of its own once fitted (not with the
    transport-only engine: it has no features); each try's outcome counted and kept in Redis for the operator."""
    if settings.engine == TRANSPORT_ONLY_ENGINE:
        return LineScopes()
    return LineScopes(
        fit=LineRankerFits(),
        on_fitted=metrics.line_ranker_fitted,
        on_state=functools.partial(record_state, client, settings.worker_id),
    )


def publish_quietly(connection: MqttConnection, topic: str, payload: bytes) -> bool:
    """An enrolment's outcome to its device at QoS 1 (paho resends it after a reconnect); False for one paho did
    not take (logged, never raised: the enrolment itself is done, and its request stays unanswered)."""
    try:
        connection.publish(topic, payload, qos=1)
    except PublishFailed as exc:
        logger.warning("the enrolment's outcome on %s was not sent: %s", topic, exc)
        return False
    return True


def enrolment_problem(settings: WorkerSettings) -> str | None:
    """Why this worker cannot run enrolments (None: it can): it then does not consume their queue."""
    if not settings.enrol:
        return "PARTSIGHT_WORKER_ENROL=0"
    if settings.engine == TRANSPORT_ONLY_ENGINE:
        return "the transport-only engine computes no features"
    store = model_store_of(settings.model_dir)
    if store is None:
        return f"PARTSIGHT_MODEL_DIR={settings.model_dir} names a version, not a store with a 'current'"
    if not os.access(store, os.W_OK | os.X_OK):
        return f"the model store {store} is not writable by this user (mount it read-write to enrol)"
    return None


def model_store_of(model_dir: Path) -> Path | None:
    """`model_dir` when it is a store (versions and a `current`), where enrolments write; None for a version
    directory served as it is."""
    return model_dir if (model_dir / CURRENT).exists() and not (model_dir / MANIFEST).is_file() else None


def served_model(recognizer: Recognizer, limits: DecodeLimits, *, matches: int = DEFAULT_MATCHES) -> ServedModel:
    """A loaded recognizer as the pipeline serves it; each result names up to `matches` nearest enrolled photos."""
    bundle, engine = recognizer.bundle, recognizer.engine
    return ServedModel(
        info=ModelInfo(bundle.name, bundle.version, recognizer.input_size),
        prepare=lambda data: engine.prepare(data, limits),
        features=engine.features,
        classify=functools.partial(_classify, recognizer, matches),
        catalog=bundle.catalog,
        description={
            "name": bundle.name,
            "version": bundle.version,
            "backbone": recognizer.spec.name,
            "engine": engine.name,
            "device": engine.device,
        },
        categories=tuple(sorted(set(bundle.head.categories))),
        feature_space=bundle.feature_space,
        same_product=_same_product_once(bundle.gallery, bundle.head.categories),
        products=bundle.head.products,
        product_categories=bundle.head.categories,
        object_rule=object_rule_of(bundle.novelty),
        bundle=bundle,
    )


def object_rule_of(novelty: NoveltyModel | None) -> ObjectRule:
    """The version's object operating point: its novelty thresholds for one and for several agreeing frames."""
    if novelty is None:
        return ObjectRule()
    return ObjectRule(single_threshold=novelty.threshold, more_thresholds=novelty.object_thresholds)


def _same_product_once(gallery: Gallery | None, categories: Sequence[str]) -> Callable[[], float | None]:
    """The gallery's same-product similarity (models.answer.same_product), computed the first time it is asked
    for (by the review writer's thread, or the objects' background thread: never on a frame's path) and kept;
    None, kept too, when it cannot be had.
    It runs with BLAS on one thread so it does not take both cores from the engine; the limit is the process's, so
    for its ~50 ms the head's numpy work on frames runs on one thread too (the engine's own pool is untouched)."""

    @functools.cache
    def similarity() -> float | None:
        if gallery is None or len(categories) != len(gallery.products):
            return None
        try:
            with threadpool_limits(limits=1):
                return same_product_similarity(
                    gallery.features, gallery.labels, categories=np.asarray(categories)[gallery.labels]
                )
        except Exception:  # the review queue groups nothing for this version; frames are untouched
            logger.exception("could not calibrate the same-product similarity of the review queue")
            return None

    return similarity


def _classify(
    recognizer: Recognizer, matches: int, rows: np.ndarray, allowed: Sequence[LineScope | None] | None
) -> list[Decision]:
    return recognizer.classify(rows, matches=matches, allowed=allowed)


def transport_only_model() -> ServedModel:
    """The `none` engine: frames skip decode and features and are answered `unknown`, so the transport's own
    ceiling can be measured on any box (as Triton's identity models serve its perf analyzer). It has no gallery:
    its results carry novelty null and no matches."""

    def unknown(features: np.ndarray, allowed: Sequence[LineScope | None] | None = None) -> list[Decision]:
        return [Decision("unknown", None, None, 0.0, 0.0, []) for _ in range(len(features))]

    def no_features(items: list[Any]) -> list[np.ndarray | ImageError]:
        raise ModelUnavailable("the transport-only engine computes no features")

    return ServedModel(
        info=ModelInfo("transport-only", "none", 0),
        prepare=lambda data: None,
        features=no_features,
        classify=unknown,
        catalog={},
        description={
            "name": "transport-only",
            "version": "none",
            "backbone": "none",
            "engine": "none",
            "device": "cpu",
        },
        categories=(),
        transport_only=True,
    )


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RuntimeHolder:
    """One Runtime per process, built once under a lock. A build that failed is not tried again per task: the
    worker must not take frames it cannot serve (its metrics port would be taken, every task would fail)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._failure: str | None = None

    def get(self) -> Runtime:
        if self._runtime is None:
            with self._lock:
                if self._failure is not None:
                    raise ModelUnavailable(self._failure)
                if self._runtime is None:
                    try:
                        self._runtime = Runtime.build(self._settings)
                    except Exception as exc:
                        self._failure = f"the worker cannot serve: {describe_failure(exc)}"
                        raise ModelUnavailable(self._failure) from exc
        return self._runtime

    def stop_accepting(self) -> None:
        if self._runtime is not None:
            self._runtime.stop_accepting()

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None


def describe_failure(exc: BaseException) -> str:
    """One line an operator can act on: a port in use, a missing model directory, a refused engine."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"its metrics port is in use ({exc.strerror}); set PARTSIGHT_WORKER_METRICS_PORT"
    return f"{type(exc).__name__}: {exc}"


def _observability(
    settings: WorkerSettings, serve_metrics: bool
) -> tuple[CollectorRegistry, WorkerMetrics, dict[str, Callable[[], bool]]]:
    """The registry, the worker's metrics and its readiness probes; served before the model loads, so /healthz
    answers and /readyz says not yet."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds
    metrics = WorkerMetrics(registry)
    probes: dict[str, Callable[[], bool]] = {"model": lambda: False}
    if serve_metrics:
        serve(settings.metrics_port, registry, lambda: {name: probe() for name, probe in probes.items()})
        logger.info("worker metrics and health on :%d (/metrics, /healthz, /readyz)", settings.metrics_port)
    return registry, metrics, probes


def pin_lane_pools(settings: WorkerSettings) -> None:
    """Every library thread pool to what one lane owns, before the model loads (and again after each load)."""
    pools = pin_thread_pools(settings.lane_threads)
    logger.info("%d lane(s) of %d thread(s); library pools %s", settings.inference_lanes, settings.lane_threads, pools)


def _model_loader(settings: WorkerSettings) -> Callable[[Path], ServedModel]:
    """How this worker loads a version directory into what it serves (first, on reload and after enrolments)."""
    limits = DecodeLimits(max_pixels=settings.max_pixels)

    def load(path: Path) -> ServedModel:
        recognizer = Recognizer.load(
            path,
            weights=settings.backbone_weights,
            device=settings.device,
            engine=settings.engine,
            cpu_threads=settings.lane_threads,
        )
        pin_thread_pools(settings.lane_threads)  # the libraries this load brought in (scikit-learn's OpenMP) too
        return served_model(recognizer, limits, matches=settings.matches)

    return load


def _first_model(settings: WorkerSettings, load: Callable[[Path], ServedModel]) -> ModelSlot:
    """The version `current` names now, loaded as such; or the transport-only stand-in for PARTSIGHT_ENGINE=none."""
    if settings.engine == TRANSPORT_ONLY_ENGINE:
        logger.warning(
            "PARTSIGHT_ENGINE=none: every frame is answered unknown without being decoded or looked at "
            "(a transport benchmark, never a production setting)"
        )
        return ModelSlot(transport_only_model(), ("none", "none"))
    signature = served_signature(settings.model_dir)
    return ModelSlot(load(Path(signature[0])), signature)


def _describe(metrics: WorkerMetrics, model: ServedModel) -> None:
    """The served model's description and categories on the metrics (at start and after every reload)."""
    metrics.model.info(dict(model.description))
    metrics.precreate_categories(model.categories)


def _model_metrics(
    settings: WorkerSettings, slot: ModelSlot, metrics: WorkerMetrics, registry: CollectorRegistry
) -> None:
    metrics.max_batch_size.set(settings.max_batch_size)
    if slot.model.description["device"].startswith("cuda"):
        metrics.watch_gpu_memory(registry, slot.model.description["device"])
    metrics.model_loaded.set(1)


def _reloader(
    settings: WorkerSettings,
    slot: ModelSlot,
    load: Callable[[Path], ServedModel],
    metrics: WorkerMetrics,
    *,
    on_loaded: Callable[[ServedModel], None],
) -> ModelReloader:
    """Swaps in the version `current` names when it moves (polled, and at once on the reload signal)."""
    return ModelReloader(
        settings.model_dir,
        slot,
        load=load,
        signature=served_signature,
        reloads=metrics.model_reloads,
        refused=metrics.model_refused,
        on_loaded=on_loaded,
        interval_s=0 if settings.engine == TRANSPORT_ONLY_ENGINE else settings.model_reload_s,
    )


def _objects(
    settings: WorkerSettings,
    *,
    client: redis.Redis,
    connection: MqttConnection,
    topics: Topics,
    slot: ModelSlot,
    metrics: WorkerMetrics,
) -> Objects:
    book = ObjectBook(client, open_ttl_s=max(600, settings.objects.keep_s))
    object_metrics = metrics.objects

    def counted(decided: Decided, reason: str) -> None:
        object_metrics.decided.labels(outcome=decided.event["status"], reason=reason).inc()
        object_metrics.frames.observe(decided.event["frames"])
        object_metrics.decision_seconds.observe(decided.event["decision_seconds"])

    tracker = ObjectTracker(book, settings.objects, on_decided=counted)
    grouping = None
    if settings.objects.auto:
        grouping = AutoGrouping(client, gap_s=settings.objects.gap_s, ttl_s=AUTO_KEEP_S)
    return Objects(
        tracker,
        book,
        grouping,
        connection,
        topics,
        model=slot.get,
        metrics=object_metrics,
    )


def _review_sink(settings: WorkerSettings, store: ReviewStore | None, metrics: WorkerMetrics) -> ReviewSink | NoReview:
    if store is None:
        return NoReview()
    logger.info("frames for review kept in %s", settings.review.location)
    return ReviewSink(store, metrics, sample=settings.review_sample, margin=settings.review_margin)


def _batcher(settings: WorkerSettings, metrics: WorkerMetrics) -> MicroBatcher[Any, np.ndarray | ImageError]:
    return MicroBatcher(
        features_by_model,
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000,
        on_batch=lambda size, seconds: metrics.batch_size.observe(size),
        name="feature-batcher",
        lanes=settings.inference_lanes,
    )


def _connection(settings: WorkerSettings, topics: Topics, metrics: WorkerMetrics) -> MqttConnection:
    return MqttConnection(
        settings.mqtt,
        client_id=f"partsight-worker-{settings.worker_id}",
        status_topic=topics.status("worker", settings.worker_id),
        on_state=lambda up: metrics.mqtt_connected.set(1 if up else 0),
        on_reconnect=metrics.mqtt_reconnects.inc,
    )


def _reload_signal(settings: WorkerSettings, reloader: ModelReloader, lines: LinesView) -> ReloadSignal | None:
    """Reload at once when any process announces a new `current` or a change of lines on Redis (the poll and the
    lines file's stat stay as the fallback)."""
    if settings.engine == TRANSPORT_ONLY_ENGINE:
        return None

    def changed() -> None:
        lines.changed()
        reloader.check()

    signal = ReloadSignal(
        lambda: redis.Redis.from_url(redis_client_url(settings.redis_url), socket_timeout=5),
        MODEL_CHANNEL,
        changed,
    )
    signal.start()
    return signal


def _enrolments(
    settings: WorkerSettings,
    slot: ModelSlot,
    *,
    load: Callable[[Path], ServedModel],
    metrics: WorkerMetrics,
    announce: Callable[[str, str], Any],
    reload_now: Callable[[], Any],
    connection: MqttConnection,
    topics: Topics,
) -> tuple[EnrolmentRunner | None, str | None]:
    """The enrolment runner, or None and why this worker runs no enrolments."""
    problem = enrolment_problem(settings)
    runner = None
    if problem is None:
        # a store shared by machines: flock on a network volume is not to be trusted, Redis is
        use_redis_lock(RedisStoreLocks.from_url(redis_client_url(settings.redis_url)))
        try:
            runner = EnrolmentRunner(
                settings.model_dir,
                served=slot.get,
                load=load,
                metrics=metrics,
                announce=announce,
                reload_now=reload_now,
                publish=functools.partial(publish_quietly, connection),
                topics=topics,
                batch=settings.max_batch_size,
                keep_versions=settings.keep_versions,
                window_s=settings.enrol_window_s,
            )
        except EnrolmentError as exc:
            problem = str(exc)
    if problem is not None:
        logger.info("this worker runs no enrolments: %s", problem)
    return runner, problem
