"""One partsight deployment for integration tests and the fault benchmark: a bridge and a worker under their
own topic prefix and Redis database, beside Mosquitto and Redis servers that the caller owns."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib

from broker.contract import FRAME_QUEUE
from broker.framestore import PENDING_KEY
from broker.topics import Topics
from partsight.testing.harness import Listener, Proc, base_env, frame_properties, partsight, readyz, wait_for
from partsight.testing.servers import ServerProcess, free_port

_prefixes = itertools.count(1)
UNACKED_KEY = "unacked"  # kombu's Redis transport: tasks delivered to a worker and not yet acknowledged


def ready(port: int) -> bool:
    try:
        return readyz(port)[0] == 200
    except OSError:
        return False


@dataclass
class Stack:
    """One deployment under its own topic prefix and Redis database: a bridge and a worker."""

    env: dict[str, str]
    topics: Topics
    mqtt_port: int
    bridge_port: int
    worker_port: int
    logs: Path
    api_port: int = 0
    bridge: Proc | None = None
    worker: Proc | None = None
    api: Proc | None = None
    bridge_env: dict[str, str] = field(default_factory=dict)  # the bridge's own settings over `env`
    _worker_runs: int = 0

    def start_bridge(self) -> Proc:
        self.bridge = partsight("bridge", {**self.env, **self.bridge_env}, self.logs / "bridge.log").start()
        wait_for(lambda: ready(self.bridge_port), 30, "bridge ready")
        return self.bridge

    def start_worker(self) -> Proc:
        self._worker_runs += 1
        env = dict(self.env, PARTSIGHT_WORKER_ID=f"{self.env['PARTSIGHT_WORKER_ID']}-{self._worker_runs}")
        self.worker = partsight("worker", env, self.logs / f"worker-{self._worker_runs}.log").start()
        wait_for(lambda: ready(self.worker_port), 90, "worker ready")
        return self.worker

    def start_api(self, **extra: str) -> Proc:
        """`partsight api` on `api_port` (PARTSIGHT_API_PORT), with `extra` settings over `env`; ready when its
        /readyz says MQTT, Redis and the store are all there."""
        api = partsight("api", {**self.env, **extra}, self.logs / "api.log").start()
        self.api = api
        wait_for(lambda: ready(self.api_port) or not api.alive, 30, "api ready")
        assert api.alive, f"partsight api exited: {api.log()[-2000:]}"
        return api

    def start(self) -> Stack:
        self.start_worker()
        self.start_bridge()
        return self

    def listen(self, device: str) -> Listener:
        """A listener for everything on the device's topics (its frames too: see answers_by_frame)."""
        return Listener("127.0.0.1", self.mqtt_port, [f"{self.topics.prefix}/{device}/+"])

    def send(
        self, client: Any, device: str, frame_ids: Iterable[str], images: Sequence[bytes], interval_s: float = 0.0
    ) -> None:
        """Publish one frame per id at QoS 1 with its frame_id user property, cycling through `images`."""
        for index, frame_id in enumerate(frame_ids):
            client.publish(
                self.topics.frame(device), images[index % len(images)], qos=1, properties=frame_properties(frame_id)
            )
            if interval_s:
                time.sleep(interval_s)

    def in_flight(self) -> dict[str, int]:
        """What could still produce an answer: tasks waiting, tasks a worker holds unacknowledged (prefetched,
        running or waiting to retry), frames stored and not yet answered."""
        client = redis_lib.Redis.from_url(self.env["PARTSIGHT_REDIS_URL"], socket_timeout=2)
        try:
            # a sync client answers at once; redis-py types each call as "int or awaitable"
            pipe = client.pipeline()
            pipe.llen(FRAME_QUEUE)
            pipe.hlen(UNACKED_KEY)
            pipe.zcard(PENDING_KEY)
            counts = pipe.execute()
            return {"queued": int(counts[0]), "unacked": int(counts[1]), "pending": int(counts[2])}
        finally:
            client.close()

    def wait_settled(self, timeout: float = 150.0) -> None:
        """Wait until nothing is left that could answer again, then for answers still crossing Mosquitto.

        With no task queued or held and no frame pending, no redelivery can come any more: a duplicate would
        have to be on its way already. Sleeping a fixed second instead could not see one that redelivery sends
        only after the visibility timeout. A task whose acknowledgement Redis lost (it went away just then)
        stays held until kombu restores it, which it checks only every 100 s (ten 10 s ticks): hence 150 s.
        """
        wait_for(lambda: not any(self.in_flight().values()), timeout, "no task queued or held, no frame pending")
        time.sleep(0.5)

    def stop(self) -> None:
        for proc in (self.api, self.bridge, self.worker):
            if proc:
                proc.stop()


def make_stack(mqtt_server: ServerProcess, redis: ServerProcess, model_store: Path, logs: Path, **extra: str) -> Stack:
    index = next(_prefixes)
    prefix = f"it{index}"
    bridge_port, worker_port, api_port = free_port(), free_port(), free_port()
    env = base_env(
        PARTSIGHT_MQTT_URL=f"mqtt://127.0.0.1:{mqtt_server.port}",
        PARTSIGHT_REDIS_URL=f"redis://127.0.0.1:{redis.port}/{index % 16}",
        PARTSIGHT_TOPIC_PREFIX=prefix,
        PARTSIGHT_MODEL_DIR=str(model_store),
        PARTSIGHT_BRIDGE_METRICS_PORT=str(bridge_port),
        PARTSIGHT_WORKER_METRICS_PORT=str(worker_port),
        PARTSIGHT_API_PORT=str(api_port),
        PARTSIGHT_API_ID=f"api-{prefix}",
        PARTSIGHT_BRIDGE_ID=f"bridge-{prefix}",
        PARTSIGHT_WORKER_ID=f"worker-{prefix}",
        PARTSIGHT_MAX_PAYLOAD_BYTES=str(2 * 1024 * 1024),
        PARTSIGHT_MAX_PIXELS=str(25_000_000),
        PARTSIGHT_VISIBILITY_TIMEOUT_S="6",
        PARTSIGHT_CLAIM_TTL_S="3",
        PARTSIGHT_DEVICE="cpu",
        **extra,
    )
    logs.mkdir(parents=True, exist_ok=True)
    # a stack's Redis database is shared with the stack 16 before it: tasks that one left (an enrolment waiting to
    # be retried when its worker stopped) must not reach this one's worker, which may serve another store
    client = redis_lib.Redis.from_url(env["PARTSIGHT_REDIS_URL"], socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()
    return Stack(env, Topics(prefix), mqtt_server.port, bridge_port, worker_port, logs, api_port=api_port)
