"""Metric names follow Prometheus conventions: `promtool check metrics` (Debian's prometheus package) is clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from broker.metrics import BridgeMetrics
from worker.metrics import WorkerMetrics


def exposition(factory: type) -> bytes:
    registry = CollectorRegistry()
    metrics = factory(registry)
    if isinstance(metrics, WorkerMetrics):
        metrics.precreate_categories(["tops", "bags"])
        metrics.model.info({"name": "m", "version": "v1"})
    return generate_latest(registry)


@pytest.mark.parametrize("factory", [BridgeMetrics, WorkerMetrics])
def test_promtool_finds_no_problem(factory: type) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (the README's test command does)"
    result = subprocess.run([promtool, "check", "metrics"], input=exposition(factory), capture_output=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode()
    )


def test_labels_are_bounded_and_never_hold_ids() -> None:
    text = exposition(WorkerMetrics).decode() + exposition(BridgeMetrics).decode()
    for forbidden in ("frame_id", "task_id", "device="):
        assert forbidden not in text
