"""Prometheus metrics of the worker. Every metric takes the registry it lives in; labels are bounded."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from broker.codes import ErrorCode
from broker.metrics import labelled_counter

STAGES = ("queue", "decode", "features", "classify", "publish", "total")
STATUSES = ("recognized", "unknown")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_CATEGORY = "none"
NOVELTY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
# Review items not kept (sampled: left out by PARTSIGHT_REVIEW_SAMPLE; busy: the writer's queue was full; error:
# the store failed; too_large: an image above PARTSIGHT_REVIEW_MAX_BYTES), or kept and removed by this worker to
# hold the store's bounds (evicted_count, evicted_bytes: oldest first; expired: older than the age limit).
REVIEW_DROP_REASONS = ("sampled", "busy", "error", "too_large", "evicted_count", "evicted_bytes", "expired")


OBJECT_OUTCOMES = ("recognized", "unknown")
OBJECT_REASONS = ("agreed", "object_end", "max_frames", "next_object", "gap")


class ObjectMetrics:
    """Objects (several frames of one part, one decision) that this worker decided, and their events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decided = Counter(
            "partsight_worker_objects_total",
            "Objects this worker decided, by outcome and by what decided them "
            "(agreed, object_end, max_frames, next_object, gap).",
            ["outcome", "reason"],
            registry=registry,
        )
        for outcome in OBJECT_OUTCOMES:
            for reason in OBJECT_REASONS:
                self.decided.labels(outcome=outcome, reason=reason)
        self.frames = Histogram(
            "partsight_worker_object_frames",
            "Frames each decided object had.",
            buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20),
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "partsight_worker_object_decision_seconds",
            "Seconds from an object's first frame received to its decision.",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.events_published = Counter(
            "partsight_worker_object_events_published_total",
            "Object events the broker took (first tries and the outbox's).",
            registry=registry,
        )
        self.events_republished = Counter(
            "partsight_worker_object_events_republished_total",
            "Object events published again from the outbox (their first publication was not confirmed in time).",
            registry=registry,
        )
        self.open = Gauge("partsight_objects_open", "Objects waiting for more frames or their gap.", registry=registry)
        self.outbox = Gauge(
            "partsight_object_events_unpublished",
            "Decided objects whose event is not yet published.",
            registry=registry,
        )
        self.sweep_failures = Counter(
            "partsight_worker_object_sweep_failures_total",
            "Sweeps of open objects and unpublished events that failed (Redis or the broker away).",
            registry=registry,
        )


ENROLMENT_OUTCOMES = ("done", "failed")
CONSOLIDATION_OUTCOMES = ("done", "failed", "busy", "nothing")
LINE_RANKER_OUTCOMES = ("fitted", "none", "failed")


class WorkerMetrics:
    # long: one declaration a metric, each with its help text; splitting them would only scatter the list
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_latency = Histogram(
            "partsight_worker_stage_seconds",
            "Time spent per frame in each stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        for stage in STAGES:
            self.stage_latency.labels(stage=stage)
        self.max_batch_size = Gauge(
            "partsight_worker_max_batch_size_frames", "The largest micro-batch the worker runs.", registry=registry
        )
        self.batch_size = Histogram(
            "partsight_worker_batch_size_frames",
            "Frames per forward pass of the backbone.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=registry,
        )
        self.results = Counter(
            "partsight_worker_results_total",
            "Results published, by status and category.",
            ["status", "category"],
            registry=registry,
        )
        self.errors = Counter(
            "partsight_worker_errors_total", "Error messages published, by code.", ["code"], registry=registry
        )
        for code in ErrorCode:
            self.errors.labels(code=str(code))
        self.duplicates = Counter(
            "partsight_worker_duplicate_deliveries_total",
            "Task deliveries skipped because the frame was answered.",
            registry=registry,
        )
        self.publish_failures = Counter(
            "partsight_worker_publish_failures_total",
            "Answers that could not be published (task retried).",
            registry=registry,
        )
        self.malformed_tasks = Counter(
            "partsight_worker_malformed_tasks_total",
            "Tasks whose arguments do not fit the contract.",
            registry=registry,
        )
        self.unknown_tasks = Counter(
            "partsight_worker_unknown_tasks_total",
            "Tasks under a name this worker does not serve (a newer bridge in an upgrade), given back to the queue.",
            ["task"],
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "partsight_worker_mqtt_connected", "1 while connected to the MQTT broker.", registry=registry
        )
        self.mqtt_reconnects = Counter(
            "partsight_worker_mqtt_reconnects_total", "Reconnections to the MQTT broker.", registry=registry
        )
        self.model_loaded = Gauge(
            "partsight_worker_model_loaded", "1 once the model is loaded and verified.", registry=registry
        )
        self.model = Info("partsight_model", "The model served by this worker.", registry=registry)
        self.model_reloads = Counter(
            "partsight_worker_model_reloads_total",
            "New model versions seen in the store: loaded and swapped in, or refused (the served one stays).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("loaded", "refused"):
            self.model_reloads.labels(outcome=outcome)
        self.model_refused = Gauge(
            "partsight_worker_model_refused",
            "1 while the store's current version is one this worker refused (it serves the previous one).",
            registry=registry,
        )

        self.novelty = Histogram(
            "partsight_worker_novelty_ratio",
            "Novelty score (0..1) of answered frames: how unlike every enrolled product they look.",
            buckets=NOVELTY_BUCKETS,
            registry=registry,
        )
        self.novel = Counter(
            "partsight_worker_novel_frames_total",
            "Answered frames at or above the model's novelty threshold (answered unknown as never seen).",
            registry=registry,
        )
        self.review_kept = Counter(
            "partsight_worker_review_kept_total", "Frames kept in the review queue.", registry=registry
        )
        self.review_dropped = Counter(
            "partsight_worker_review_dropped_total",
            "Review items not kept, or removed to hold the store's bounds, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REVIEW_DROP_REASONS:
            self.review_dropped.labels(reason=reason)
        self.review_items = Gauge(
            "partsight_worker_review_items",
            "Items in the review store (of every worker sharing it), after this worker's last write.",
            registry=registry,
        )
        self.review_bytes = Gauge(
            "partsight_worker_review_bytes",
            "Image bytes in the review store (of every worker sharing it), after this worker's last write.",
            registry=registry,
        )

        self.enrolments = labelled_counter(
            "partsight_worker_enrolments_total",
            "Enrolments this worker ran, by outcome (done: a new version is current; failed: current unchanged).",
            "outcome",
            ENROLMENT_OUTCOMES,
            registry,
        )
        self.enrolment_seconds = Histogram(
            "partsight_worker_enrolment_seconds",
            "Seconds from taking an enrolment to its version being current (features, refit, write).",
            buckets=(0.5, 1, 2, 3, 5, 8, 12, 15, 20, 30, 60, 120, 300),
            registry=registry,
        )
        self.enrolments_waiting = Counter(
            "partsight_worker_enrolments_waiting_total",
            "Enrolment requests told to wait for the running consolidation (the model carries as many quick "
            "enrolments as it may), each counted once; their outcome follows when it lands.",
            registry=registry,
        )
        self.consolidations = labelled_counter(
            "partsight_worker_consolidations_total",
            "Consolidations this worker ran (a refit that folds quick enrolments into the head), by outcome.",
            "outcome",
            CONSOLIDATION_OUTCOMES,
            registry,
        )
        self.consolidation_seconds = Histogram(
            "partsight_worker_consolidation_seconds",
            "Seconds a consolidation's child process took (the refit, the version written).",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
            registry=registry,
        )
        self.line_rankers = labelled_counter(
            "partsight_worker_line_rankers_total",
            "Lines' own classifiers this worker fitted (the first time a version answers a frame on the line), by "
            "outcome: fitted; none (fewer than two of its products have photos, too many products, or a version "
            "that keeps no training rows); failed.",
            "outcome",
            LINE_RANKER_OUTCOMES,
            registry,
        )
        self.line_ranker_seconds = Histogram(
            "partsight_worker_line_ranker_seconds",
            "Seconds a line's own classifier took to fit (a background thread; its frames meanwhile are answered "
            "by the head among the line's products).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )

        self.objects = ObjectMetrics(registry)

    def line_ranker_fitted(self, outcome: str, seconds: float) -> None:
        self.line_rankers.labels(outcome=outcome).inc()
        if outcome == "fitted":
            self.line_ranker_seconds.observe(seconds)

    def precreate_categories(self, categories: Iterable[str]) -> None:
        for category in [*categories, NO_CATEGORY]:
            for status in STATUSES:
                self.results.labels(status=status, category=category)

    def watch_gpu_memory(self, registry: CollectorRegistry, device: str) -> None:
        """GPU memory in use and in all, read from the driver at each scrape (GPU workers only)."""
        import torch  # noqa: PLC0415 - only a GPU worker gets here; a CPU worker on ONNX never loads torch

        def used() -> float:
            free, total = torch.cuda.mem_get_info(device)
            return float(total - free)

        Gauge(
            "partsight_worker_gpu_memory_used_bytes", "GPU memory in use on the worker's device.", registry=registry
        ).set_function(used)
        Gauge(
            "partsight_worker_gpu_memory_total_bytes", "GPU memory of the worker's device.", registry=registry
        ).set_function(lambda: float(torch.cuda.mem_get_info(device)[1]))
