"""Runs the bridge process: metrics endpoint, bridge loop, clean drain on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from broker.bridge import Bridge
from broker.dispatch import CeleryDispatcher
from broker.http import serve
from broker.metrics import BridgeMetrics
from broker.settings import BridgeSettings, redact_url

logger = logging.getLogger(__name__)


def run_bridge(settings: BridgeSettings) -> None:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds
    metrics = BridgeMetrics(registry, max_tracked_devices=settings.max_tracked_devices)
    dispatcher = CeleryDispatcher(
        settings.redis_url,
        visibility_timeout_s=settings.visibility_timeout_s,
        frame_ttl_s=settings.frame_ttl_s,
        redeliver_after_s=settings.redeliver_after_s,
        window_frames=settings.window_frames,
    )
    bridge = Bridge(settings, dispatcher=dispatcher, metrics=metrics)
    http = serve(settings.metrics_port, registry, bridge.readiness)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        logger.info("signal %d: stopping the bridge", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    logger.info(
        "bridge %s: %s -> %s, metrics on :%d",
        settings.bridge_id,
        settings.mqtt.display,
        redact_url(settings.redis_url),
        settings.metrics_port,
    )
    bridge.start()
    stop.wait()
    bridge.stop()
    dispatcher.close()
    http.shutdown()
    logger.info("bridge stopped")
