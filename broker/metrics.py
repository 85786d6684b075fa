"""Prometheus metrics of the bridge. Every metric takes the registry it lives in; labels are bounded."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.codes import ErrorCode

REJECT_REASONS = (*(str(code) for code in ErrorCode if code is not ErrorCode.BAD_ENROLMENT), "unknown_topic")
# an enrolment is sent to the workers, or refused with one of these codes
ENROL_OUTCOMES = (
    "enqueued",
    *(
        str(code)
        for code in (
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.UNSUPPORTED_FORMAT,
            ErrorCode.BAD_METADATA,
            ErrorCode.BAD_ENROLMENT,
            ErrorCode.OVERLOADED,
            ErrorCode.INTERNAL,
        )
    ),
)
SIZE_BUCKETS = (1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7)
WINDOW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def labelled_counter(
    name: str, documentation: str, label: str, values: Iterable[str], registry: CollectorRegistry
) -> Counter:
    """A counter by one bounded label, every value created at 0 (so a rate is there before the first event)."""
    counter = Counter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(**{label: value})
    return counter


class BridgeMetrics:
    # long: one declaration a metric, each with its help text; splitting them would only scatter the list
    def __init__(self, registry: CollectorRegistry, *, max_tracked_devices: int = 1000) -> None:
        self.frames_received = Counter(
            "partsight_bridge_frames_received_total", "Frames received on frame topics.", registry=registry
        )
        self.frames_enqueued = Counter(
            "partsight_bridge_frames_enqueued_total", "Frames enqueued as recognition tasks.", registry=registry
        )
        self.frames_rejected = Counter(
            "partsight_bridge_frames_rejected_total",
            "Frames refused by the bridge, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.frames_rejected.labels(reason=reason)
        self.payload_size = Histogram(
            "partsight_bridge_payload_bytes",
            "Size of received frame payloads.",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.enqueue_latency = Histogram(
            "partsight_bridge_enqueue_seconds",
            "Time to hand one window of frames to Redis (stored and its task sent).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.window_size = Histogram(
            "partsight_bridge_window_frames",
            "Frames per window: admitted frames stored with one Redis write and sent as one task.",
            buckets=WINDOW_BUCKETS,
            registry=registry,
        )
        self.enqueue_failures = Counter(
            "partsight_bridge_enqueue_failures_total",
            "Failed attempts to enqueue a window of frames or an enrolment (retried).",
            registry=registry,
        )
        self.enrolments = Counter(
            "partsight_bridge_enrolments_total",
            "Enrolment photos received on enrol topics: sent to the workers (enqueued) or refused, by code.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ENROL_OUTCOMES:
            self.enrolments.labels(outcome=outcome)
        self.mqtt_connected = Gauge(
            "partsight_bridge_mqtt_connected", "1 while connected to the MQTT broker.", registry=registry
        )
        self.mqtt_reconnects = Counter(
            "partsight_bridge_mqtt_reconnects_total", "Reconnections to the MQTT broker.", registry=registry
        )
        self.redis_connected = Gauge(
            "partsight_bridge_redis_connected", "1 while the last call to Redis succeeded.", registry=registry
        )
        self.queue_depth = Gauge(
            "partsight_queue_depth_frames",
            "Frames admitted and not yet answered: queued or held by a worker (last sample).",
            registry=registry,
        )
        self.queue_limit = Gauge(
            "partsight_queue_limit_frames",
            "The queue bound (PARTSIGHT_MAX_QUEUE_LENGTH): frames beyond it are answered 'overloaded'.",
            registry=registry,
        )
        self.frames_redelivered = Counter(
            "partsight_bridge_frames_redelivered_total",
            "Frames sent again because no worker answered them in time.",
            registry=registry,
        )
        self.frames_expired = Counter(
            "partsight_bridge_frames_expired_total",
            "Frames whose stored data expired before any worker answered them.",
            registry=registry,
        )
        self.pending = Gauge(
            "partsight_bridge_pending_frames", "Frames received but not yet handed to Redis.", registry=registry
        )
        self.device_last_frame = Gauge(
            "partsight_bridge_device_last_frame_timestamp_seconds",
            "Unix time of the last frame from each device (the first max_tracked_devices devices seen).",
            ["device"],
            registry=registry,
        )
        self.untracked_device_frames = Counter(
            "partsight_bridge_untracked_device_frames_total",
            "Frames from devices beyond PARTSIGHT_MAX_TRACKED_DEVICES, not given a last-frame series.",
            registry=registry,
        )
        self._max_tracked_devices = max_tracked_devices
        self._tracked: set[str] = set()

    def saw_device(self, device: str, when: float) -> None:
        """Record a frame from `device`; the device label stays bounded by max_tracked_devices."""
        if device not in self._tracked:
            if len(self._tracked) >= self._max_tracked_devices:
                self.untracked_device_frames.inc()
                return
            self._tracked.add(device)
        self.device_last_frame.labels(device=device).set(when)
