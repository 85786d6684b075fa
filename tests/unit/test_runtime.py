"""The worker's runtime holder: a worker that cannot build its runtime says why once and never serves."""

from __future__ import annotations

import errno

import pytest

from broker.settings import MqttSettings
from worker import runtime as runtime_module
from worker.errors import ModelUnavailable
from worker.runtime import RuntimeHolder
from worker.settings import WorkerSettings


def test_a_failed_build_is_remembered_not_retried_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []

    def build(settings: WorkerSettings, **_: object) -> None:
        builds.append(1)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nonexistent/models-store")

    monkeypatch.setattr(runtime_module.Runtime, "build", classmethod(lambda cls, s, **k: build(s)))
    holder = RuntimeHolder(WorkerSettings(mqtt=MqttSettings("127.0.0.1", 1883)))
    for _ in range(3):
        with pytest.raises(ModelUnavailable, match="/nonexistent/models-store"):
            holder.get()
    assert builds == [1]  # a task after a failed start would otherwise rebuild (and find its port taken)


def test_a_taken_metrics_port_is_named_as_such() -> None:
    text = runtime_module.describe_failure(OSError(errno.EADDRINUSE, "Address already in use"))
    assert "PARTSIGHT_WORKER_METRICS_PORT" in text
