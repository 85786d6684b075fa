"""A camera as a device would be: publishes image files on its frame topic and collects the answers.

Used by `partsight camera`, the demo, the tests and the benchmarks. It reads files as bytes and never
decodes them, so it runs wherever the bridge runs.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.contract import new_frame_id, rfc3339
from broker.errors import PublishFailed
from broker.mqtt import MqttConnection
from broker.settings import MqttSettings
from broker.topics import Topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    frame_id: str | None
    topic: str
    message: dict[str, Any]
    latency_s: float | None

    @property
    def is_error(self) -> bool:
        return "error" in self.message


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Summary:
    sent: int = 0
    answers: list[Answer] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def latencies_ms(self) -> list[float]:
        return [a.latency_s * 1000 for a in self.answers if a.latency_s is not None]

    @property
    def errors(self) -> int:
        return sum(1 for a in self.answers if a.is_error)

    @property
    def throughput(self) -> float:
        return len(self.answers) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        lat = self.latencies_ms
        return [
            f"frames sent {self.sent}, answered {len(self.answers)} ({self.errors} errors) "
            f"in {self.elapsed_s:.1f} s: {self.throughput:.1f} frames/s",
            f"latency ms: p50 {percentile(lat, 50):.1f}  p90 {percentile(lat, 90):.1f}  "
            f"p99 {percentile(lat, 99):.1f}  max {max(lat) if lat else float('nan'):.1f}",
        ]


class Camera:
    """One device: publishes frames and matches answers to them by frame id."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        device: str,
        *,
        on_answer: Callable[[Answer], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.topics = topics
        self.device = device
        self._on_answer = on_answer
        self._sent_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self.answers: list[Answer] = []
        self.connection = MqttConnection(
            settings, client_id=client_id or f"partsight-camera-{device}-{new_frame_id()[:8]}"
        )
        self.connection.client.on_message = self._on_message
        self.connection.subscribe(topics.result(device), qos=1)
        self.connection.subscribe(topics.error(device), qos=1)

    def __enter__(self) -> Camera:
        self.connection.start()
        self.connection.wait_connected(15)
        time.sleep(0.2)  # let the SUBACKs arrive before the first frame
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.stop()

    def publish(self, image: bytes, *, frame_id: str | None = None, qos: int = 1) -> str:
        """Send one frame and return its id; PublishFailed when paho did not take it."""
        frame_id = frame_id or new_frame_id()
        captured_at = rfc3339(time.time())
        topic = self.topics.frame(self.device)
        with self._lock:
            self._sent_at[frame_id] = time.perf_counter()
        try:
            if self.connection.is_v5:
                properties = Properties(PacketTypes.PUBLISH)
                properties.UserProperty = [("frame_id", frame_id), ("captured_at", captured_at)]
                self.connection.publish(topic, image, qos=qos, properties=properties)
            else:
                envelope = {
                    "frame_id": frame_id,
                    "captured_at": captured_at,
                    "image_b64": base64.b64encode(image).decode("ascii"),
                }
                self.connection.publish(topic, json.dumps(envelope).encode(), qos=qos)
        except PublishFailed:  # not sent: no answer will come for it
            with self._lock:
                self._sent_at.pop(frame_id, None)
            raise
        return frame_id

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._sent_at)

    def wait_outstanding_below(self, limit: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._answered:
            while len(self._sent_at) >= limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._answered.wait(remaining)
        return True

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            document = json.loads(message.payload)
        except ValueError:
            logger.warning("unparseable answer on %s", message.topic)
            return
        frame_id = document.get("frame_id")
        with self._answered:
            sent = self._sent_at.pop(frame_id, None) if frame_id else None
            answer = Answer(frame_id, message.topic, document, time.perf_counter() - sent if sent else None)
            self.answers.append(answer)
            self._answered.notify_all()
        if self._on_answer:
            self._on_answer(answer)


def stream(
    camera: Camera,
    images: Sequence[bytes],
    *,
    count: int,
    fps: float,
    window: int = 64,
    answer_timeout_s: float = 30.0,
    frame_id_of: Callable[[int], str] | None = None,
) -> Summary:
    """Publish `count` frames cycling through `images` at `fps` (0: as fast as answers allow, `window` in flight).

    Frame `index` gets the id `frame_id_of(index)`, or a random one.
    """
    summary = Summary()
    started = time.perf_counter()
    interval = 1.0 / fps if fps > 0 else 0.0
    for index in range(count):
        if interval:
            delay = started + index * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        elif not camera.wait_outstanding_below(window, answer_timeout_s):
            logger.warning("no answers for %.0f s with %d frames in flight", answer_timeout_s, window)
            break
        camera.publish(images[index % len(images)], frame_id=frame_id_of(index) if frame_id_of else None)
        summary.sent += 1
    camera.wait_outstanding_below(1, answer_timeout_s)
    summary.elapsed_s = time.perf_counter() - started
    summary.answers = list(camera.answers)
    return summary
