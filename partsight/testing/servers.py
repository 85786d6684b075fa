"""Real Mosquitto and Redis servers for the tests, each on a free loopback port in its own folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis as redis_lib

from partsight.embedded import find_binary, free_port, redis_argv, wait_port

__all__ = ["ServerProcess", "free_port", "mosquitto", "redis_server", "require_binary"]


def require_binary(name: str) -> str:
    path = find_binary(name)
    if not path:
        raise RuntimeError(f"{name} is not installed; the README's test command installs it (apt-get install {name})")
    return path


@dataclass
class ServerProcess:
    """A server we started; stop() and start() again keep its port and data folder (for restart tests)."""

    argv: list[str]
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        wait_port(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def mosquitto(folder: Path) -> ServerProcess:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {folder}/\n"
        # started as root, Mosquitto drops to the `mosquitto` user, which cannot write its database into our
        # private temporary folder: sessions and queued messages would not survive a restart
        + ("user root\n" if os.geteuid() == 0 else "")
        + "max_queued_messages 100000\n"
        "log_dest stdout\n"
    )
    return ServerProcess([require_binary("mosquitto"), "-c", str(config)], port, folder)


def redis_server(folder: Path) -> ServerProcess:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # append-only on: a restarted server keeps its queued work, as a production Redis should
    argv = redis_argv(require_binary("redis-server"), port, folder, appendonly=True)
    return ServerProcess(argv, port, folder)


@contextmanager
def empty_database(server: ServerProcess, db: int) -> Iterator[redis_lib.Redis]:
    """A client of database `db` of the test Redis, emptied before and after."""
    connection = redis_lib.Redis(host="127.0.0.1", port=server.port, db=db)
    connection.flushdb()
    try:
        yield connection
    finally:
        connection.flushdb()
        connection.close()
