"""Integration fixtures: real Mosquitto and Redis processes, and partsight's own bridge and worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from partsight.testing.servers import ServerProcess, mosquitto, redis_server
from partsight.testing.stack import Stack, make_stack


@pytest.fixture(scope="session")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    mqtt_server: ServerProcess, redis: ServerProcess, model_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running bridge and worker shared by one test module."""
    stack = make_stack(mqtt_server, redis, model_store, tmp_path_factory.mktemp("logs"))
    stack.start_worker()
    stack.start_bridge()
    yield stack
    stack.stop()


@pytest.fixture
def own_stack(mqtt_server: ServerProcess, redis: ServerProcess, model_store: Path, tmp_path: Path) -> Iterator[Stack]:
    """A fresh bridge and worker for a test that kills or restarts them; started by the test."""
    stack = make_stack(mqtt_server, redis, model_store, tmp_path / "logs")
    yield stack
    stack.stop()
