"""The store's writer lock across machines: a Redis key holding one writer's token, with a TTL renewed while held.

`flock` on a network volume (NFS, CephFS, a cloud file share) is not to be trusted: two nodes of a Kubernetes
deployment that mount the store read-write could both believe they hold it, and one enrolment's `current` would
overwrite the other's. A process that knows Redis (every worker and API, and the command line when
PARTSIGHT_REDIS_URL is set) takes this lock as well as the folder's flock:

- the key names the store by its id (`.store-id`, written once inside the store), not by a path, which differs
  from one node's mount to another's;
- `SET key token NX PX ttl` takes it; a thread renews the TTL every third of it while held; only the holder's
  token releases it or renews it (a Lua compare-and-delete, compare-and-expire);
- a holder that lost its key (paused past the TTL, cut off from Redis) finds out before it moves `current`:
  `check()` raises StoreBusy and nothing of its version becomes current.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from models.errors import StoreBusy

logger = logging.getLogger(__name__)

KEY_PREFIX = "partsight:store-lock:"
STORE_ID_FILE = ".store-id"
DEFAULT_TTL_S = 30.0

# only the holder's token renews or releases the key
_EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def store_id(store: Path) -> str:
    """The store's own id, written once (the first writer's wins: a hard link never replaces a file)."""
    path = store / STORE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    staging = store / f".store-id.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    staging.write_text(secrets.token_hex(16) + "\n")
    try:
        os.link(staging, path)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    finally:
        staging.unlink(missing_ok=True)
    return path.read_text().strip()


class HeldLock:
    """One holding of the lock; `check()` before moving `current` (StoreBusy when the key was lost)."""

    def __init__(self, client: redis.Redis, key: str, token: str, ttl_s: float) -> None:
        self._client, self.key, self._token, self._ttl_ms = client, key, token, int(ttl_s * 1000)
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, args=(ttl_s / 3,), name="store-lock-renewer", daemon=True)
        self._renewer.start()

    def check(self) -> None:
        if self._lost is None and not self._still_ours():
            self._lost = "its key in Redis is gone or another writer's"
        if self._lost is not None:
            raise StoreBusy(f"this writer lost the store's lock ({self._lost}): nothing was made current")

    def release(self) -> None:
        self._stop.set()
        self._renewer.join(5)
        try:
            self._client.eval(_RELEASE, 1, self.key, self._token)
        except redis.RedisError as exc:  # it expires by itself within the TTL
            logger.warning("could not release the store's lock %s (%s); it expires within its TTL", self.key, exc)

    def _still_ours(self) -> bool:
        try:
            return bool(self._client.eval(_EXTEND, 1, self.key, self._token, str(self._ttl_ms)))
        except redis.RedisError as exc:
            self._lost = f"Redis did not answer: {exc}"
            return False

    def _renew(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            if not self._still_ours():
                self._lost = self._lost or "its key expired before it was renewed"
                logger.error("the store's lock %s was lost while held: %s", self.key, self._lost)
                return


class RedisStoreLocks:
    """Takes the writer lock of any store in one Redis (set once per process: models.store.versions)."""

    def __init__(self, client: redis.Redis, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._client, self.ttl_s = client, ttl_s

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStoreLocks:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), **options)

    @contextlib.contextmanager
    def hold(self, store: Path, *, timeout_s: float, part: str = "") -> Iterator[HeldLock]:
        """The lock of `store` (or of one `part` of it, such as its lines, locked apart from its versions) for the
        `with` block; StoreBusy when another writer holds it past `timeout_s`, or when Redis does not answer (a
        writer that cannot take the lock writes nothing)."""
        key, token = KEY_PREFIX + store_id(store) + (f":{part}" if part else ""), secrets.token_hex(16)
        deadline = time.monotonic() + timeout_s
        try:
            while not self._client.set(key, token, nx=True, px=int(self.ttl_s * 1000)):
                if time.monotonic() > deadline:
                    raise StoreBusy(f"the store's lock {key} was held for more than {timeout_s:.0f} s: try again later")
                time.sleep(0.05)
        except redis.RedisError as exc:
            raise StoreBusy(f"the store's lock could not be taken: Redis did not answer ({exc})") from exc
        held = HeldLock(self._client, key, token, self.ttl_s)
        try:
            yield held
        finally:
            held.release()
