"""The store's writer lock in Redis, for writers on machines that share only Redis and the store's folder (flock on
a network volume is not to be trusted, so the writers here run with flock turned off)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib

from models.errors import StoreBusy
from models.store import versions
from models.store.writer_lock import KEY_PREFIX, RedisStoreLocks, store_id
from partsight.testing.harness import ROOT
from partsight.testing.servers import ServerProcess, free_port

WRITER = r"""
import contextlib, json, sys, time
from pathlib import Path
from models.store import versions
from models.store.writer_lock import RedisStoreLocks

store, url, name, rounds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
versions._flock = lambda *args: contextlib.nullcontext()  # a network volume: flock guards nothing
if url != "none":
    versions.use_redis_lock(RedisStoreLocks.from_url(url, ttl_s=2))
for index in range(rounds):
    with versions.store_lock(store, timeout_s=60):
        base = versions.current_version(store)  # what this version builds on, as an enrolment reads its base
        version = f"{name}-{index:03d}"
        (store / version).mkdir()
        (store / version / "manifest.json").write_text(json.dumps({"base": base}))
        time.sleep(0.02)  # a second writer inside this window would make a version that forgets this one
        versions.point_current(store, version)
"""


def url_of(server: ServerProcess, db: int = 5) -> str:
    return f"redis://127.0.0.1:{server.port}/{db}"


def run_two_writers(store: Path, url: str, rounds: int = 15) -> list[str]:
    """Two writer processes at once; the chain of versions from `current` back through each one's base."""
    store.mkdir()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(store), url, name, str(rounds)], cwd=ROOT)
        for name in ("node-a", "node-b")
    ]
    assert [writer.wait(120) for writer in writers] == [0, 0]
    chain, version = [], versions.current_version(store)
    while version is not None:
        chain.append(version)
        version = json.loads((store / version / "manifest.json").read_text())["base"]
    return chain


def test_two_writers_sharing_only_redis_and_the_folder_lose_no_version(redis: ServerProcess, tmp_path: Path) -> None:
    chain = run_two_writers(tmp_path / "store", url_of(redis))
    assert len(chain) == 30 and len(set(chain)) == 30  # every version builds on the one made current before it


def test_without_a_lock_that_holds_across_machines_versions_are_lost(tmp_path: Path) -> None:
    """The control: the same writers with flock as their only lock, on a volume where it guards nothing."""
    chain = run_two_writers(tmp_path / "store", "none")
    assert len(chain) < 30


def test_a_writer_that_lost_its_lock_makes_nothing_current(redis: ServerProcess, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for version in ("v1", "v2"):
        (store / version).mkdir(parents=True)
        (store / version / versions.MANIFEST).write_text("{}")
    versions.point_current(store, "v1")
    client = redis_lib.Redis.from_url(url_of(redis))
    versions.use_redis_lock(RedisStoreLocks(client, ttl_s=5))
    try:
        with pytest.raises(StoreBusy, match="lost the store's lock"), versions.store_lock(store, timeout_s=5):
            client.set(KEY_PREFIX + store_id(store), "another writer's token")  # it expired and was taken
            versions.point_current(store, "v2")
        assert versions.current_version(store) == "v1"
        assert client.get(KEY_PREFIX + store_id(store)) == b"another writer's token"  # never released by us
    finally:
        versions.use_redis_lock(None)
        client.delete(KEY_PREFIX + store_id(store))


def test_the_command_line_waits_for_a_writer_on_another_machine(redis: ServerProcess, tmp_path: Path) -> None:
    """`partsight models --pin`, a store writer, with PARTSIGHT_REDIS_URL: it takes the store's lock in Redis, so
    it waits while a writer on another node holds it (that node's flock is not ours), and pins once it is free."""
    from models.store import retention

    store = tmp_path / "store"
    (store / "v1").mkdir(parents=True)
    (store / "v1" / versions.MANIFEST).write_text("{}")
    client = redis_lib.Redis.from_url(url_of(redis))
    key = KEY_PREFIX + store_id(store)
    client.set(key, "a writer on another node", px=60_000)
    command = [sys.executable, "-m", "partsight.cli", "models", "--store", str(store), "--pin", "v1"]
    env = {**os.environ, "PARTSIGHT_REDIS_URL": url_of(redis)}
    pinning = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)
        assert pinning.poll() is None and retention.pinned_versions(store) == []  # waiting for the lock
        client.delete(key)
        output, _ = pinning.communicate(timeout=60)
    finally:
        pinning.kill()
        client.delete(key)
    assert pinning.returncode == 0, output
    assert retention.pinned_versions(store) == ["v1"]


def test_a_lock_held_past_its_ttl_is_renewed_and_the_next_writer_waits(redis: ServerProcess, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "v1").mkdir()
    locks = RedisStoreLocks.from_url(url_of(redis), ttl_s=0.6)
    with locks.hold(store, timeout_s=5) as held:
        time.sleep(1.5)  # two and a half TTLs
        held.check()
        with pytest.raises(StoreBusy, match="held for more than"), locks.hold(store, timeout_s=0.5):
            pass
    with locks.hold(store, timeout_s=1):  # released: the next writer takes it at once
        pass


def test_a_writer_whose_redis_does_not_answer_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    locks = RedisStoreLocks.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreBusy, match="Redis did not answer"), locks.hold(store, timeout_s=1):
        pass


def test_the_store_id_is_written_once_and_names_the_store_wherever_it_is_mounted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    first = store_id(store)
    assert len(first) == 32 and store_id(store) == first
    mounted_elsewhere = tmp_path / "mnt"
    mounted_elsewhere.symlink_to(store)
    assert store_id(mounted_elsewhere) == first
