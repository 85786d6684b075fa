"""Runs partsight's real processes (bridge, worker) for integration tests and reads their metrics."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]  # the checkout: partsight/testing/harness.py


def dashboard_builder() -> Any:
    """deploy/grafana/build_dashboard.py as a module: it is a script beside the deployment files, not a package."""
    if "build_dashboard" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "build_dashboard", ROOT / "deploy" / "grafana" / "build_dashboard.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_dashboard"] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules["build_dashboard"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """All samples of a /metrics endpoint, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """Status code and JSON of a process's /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metric(port: int, name: str, **labels: str) -> float | None:
    try:
        return scrape(port).get((name, tuple(sorted(labels.items()))))
    except OSError:
        return None


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int | None:
        if not self.alive:
            return self.process.returncode if self.process else None
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def partsight(command: str, env: dict[str, str], log_path: Path) -> Proc:
    return Proc(command, [sys.executable, "-m", "partsight.cli", command], env, log_path)


@dataclass
class Listener:
    """A plain paho MQTT 5 client that records every message under the topic filters it is given."""

    host: str
    port: int
    filters: Iterable[str]
    session: str | None = None  # a client id for a persistent session (messages wait while it is away)
    messages: list[tuple[str, dict[str, Any], Any]] = field(default_factory=list)
    arrivals: list[tuple[float, str, str | None]] = field(default_factory=list)  # (time, topic, frame id)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.session or "", protocol=paho.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        try:
            document = json.loads(message.payload)
        except ValueError:
            document = {"raw": message.payload}
        with self._lock:
            self.messages.append((message.topic, document, message.properties))
            self.arrivals.append((time.time(), message.topic, document.get("frame_id")))

    def __enter__(self) -> Listener:
        if self.session:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
            self.client.connect(self.host, self.port, clean_start=False, properties=properties)
        else:
            self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "listener did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def for_frame(self, frame_id: str) -> list[tuple[str, dict[str, Any], Any]]:
        with self._lock:
            return [m for m in self.messages if m[1].get("frame_id") == frame_id]

    def wait_frame(self, frame_id: str, timeout: float = 30.0) -> tuple[str, dict[str, Any], Any]:
        answers: tuple[str, dict[str, Any], Any] = wait_for(
            lambda: next(iter(self.for_frame(frame_id)), None), timeout, f"an answer for frame {frame_id}"
        )
        return answers

    def wait_frames(self, frame_ids: Iterable[str], timeout: float = 30.0) -> None:
        for frame_id in frame_ids:
            self.wait_frame(frame_id, timeout)

    def answers(self) -> list[tuple[float, str | None]]:
        """(arrival time, frame id) of every answer (result or error); the device's own frames are not answers."""
        with self._lock:
            return [(at, frame_id) for at, topic, frame_id in self.arrivals if topic.endswith(("/result", "/error"))]

    def first_answer_times(self) -> dict[str | None, float]:
        """When the first answer (result or error) for each frame id arrived."""
        first: dict[str | None, float] = {}
        for at, frame_id in self.answers():
            first.setdefault(frame_id, at)
        return first


def publisher(host: str, port: int, protocol: MQTTProtocolVersion = paho.MQTTv5) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.connect(host, port)
    client.loop_start()
    return client


def login(
    port: int, user: str | None, password: str | None, *, ca_file: str | None = None
) -> tuple[paho.Client, list[tuple[str, bytes]], Any]:
    """An MQTT 5 client logged in as `user` (TLS when `ca_file` is given): the client, the messages it
    receives, and the broker's CONNACK reason code (`.is_failure` when refused)."""
    received: list[tuple[str, bytes]] = []
    outcome: dict[str, Any] = {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    if user:
        client.username_pw_set(user, password)
    if ca_file:
        client.tls_set(ca_certs=ca_file)
    client.on_connect = lambda c, u, flags, reason, props: outcome.setdefault("connect", reason)
    client.on_message = lambda c, u, message: received.append((message.topic, bytes(message.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_for(lambda: "connect" in outcome, 10, f"CONNACK for {user}")
    return client, received, outcome["connect"]


def frame_properties(frame_id: str, **extra: object) -> Properties:
    """MQTT 5 PUBLISH properties of a frame: its frame_id user property, plus any other property given."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("frame_id", frame_id)]
    for key, value in extra.items():
        setattr(properties, key, value)
    return properties


def base_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTSIGHT_")}
    env.update({"PYTHONUNBUFFERED": "1", "PARTSIGHT_LOG_LEVEL": "info"})
    env.update(overrides)
    return env


def copy_version(store: Path, source: str, version: str, *, tamper: bool = False) -> None:
    """A copy of version `source` named `version`; `tamper` changes one byte of its head after the manifest
    recorded the file's sha256, as a damaged copy or a hand edit would."""
    shutil.copytree(store / source, store / version)
    manifest_path = store / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    manifest_path.write_text(json.dumps(manifest))
    if tamper:
        head = store / version / "head.npz"
        data = bytearray(head.read_bytes())
        data[len(data) // 2] ^= 0xFF
        head.write_bytes(bytes(data))
