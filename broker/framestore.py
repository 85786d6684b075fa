"""Claim-check for frames: the image lives in Redis once, the Celery task carries only its key.

Every stored frame is also listed in a `pending` sorted set (scored by when it was last sent) until a
worker has answered it. Frames that stay pending longer than the redelivery time are sent again by a
sweeper: that closes the gap where a worker dies between taking a task off the queue and recording it
as unacknowledged (kombu's Redis transport pops and records in two steps), so no frame is ever lost.
Duplicate sends are answered once, by the worker's ledger.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from broker.contract import FrameRequest, image_digest

logger = logging.getLogger(__name__)

DATA_PREFIX = "partsight:frame-data:"
OBJECT_PREFIX = "partsight:object:"  # one hash per (device, object): worker.object_book
ADMITTED_PREFIX = "a:"  # an object's field per frame admitted (its data key): a worker knows a frame is coming
VOTE_PREFIX = "v:"  # an object's field per frame answered (its vote)
PENDING_KEY = "partsight:pending"
SWEEP_LOCK_KEY = "partsight:pending:sweep-lock"


def frame_key(request: FrameRequest) -> str:
    """Stable for one admitted frame, so a retried enqueue stores it under the same key."""
    seed = f"{request.device}\x00{request.frame_id}\x00{request.received_at!r}".encode()
    return DATA_PREFIX + hashlib.sha256(seed).hexdigest()[:40]


# a frame admitted into an object not yet decided; a new object's hash lives as long as the frame's data (a worker
# gives it its own lifetime once it answers a frame of it), a decided one's is left as it is
_ADMIT = """
if redis.call('HEXISTS', KEYS[1], 'decided') == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


def object_key(device: str, name: str) -> str:
    return OBJECT_PREFIX + hashlib.sha256(f"{device}\x00{name}".encode()).hexdigest()[:32]


def frame_field(frame_id: str, digest: str) -> str:
    """A frame's name inside its object's hash (after ADMITTED_PREFIX or VOTE_PREFIX)."""
    return f"{frame_id}\x00{digest}"


def task_reference(key: str, request: FrameRequest) -> dict[str, Any]:
    """One frame in a task: its key, device and frame id (so an error can still be addressed), and the image's
    digest, which the answered-once ledger uses to tell a repeat of this frame from a new one reusing its id."""
    return {
        "frame_key": key,
        "device": request.device,
        "frame_id": request.frame_id,
        "digest": image_digest(request.image),
    }


def _decode(key: str, blob: bytes) -> FrameRequest | None:
    """A stored frame; None (answered `internal`, never retried forever) when its data cannot be read."""
    try:
        return FrameRequest.from_task_kwargs(msgpack.unpackb(blob, raw=False))
    except (ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        logger.error("frame data %s cannot be read (%s); answering it as internal", key, exc)
        return None


def finish_commands(pipe: Any, keys: list[str]) -> None:
    """Queue on a Redis pipeline what ends frames: their data deleted, their pending entries removed."""
    if keys:
        pipe.delete(*keys)
        pipe.zrem(PENDING_KEY, *keys)


class FrameStore:
    def __init__(self, redis: Any, *, data_ttl_s: int, clock: Callable[[], float]) -> None:
        self._redis = redis
        self.data_ttl_s = data_ttl_s
        self._clock = clock

    def put(self, key: str, request: FrameRequest) -> None:
        self.put_many([(key, request)])

    def put_many(self, frames: list[tuple[str, FrameRequest]]) -> None:
        """Store a window of frames and list them as pending, in one round trip (MULTI/EXEC: all or none)."""
        pipe = self._redis.pipeline(transaction=True)
        for key, request in frames:
            pipe.set(key, msgpack.packb(request.to_task_kwargs(), use_bin_type=True), ex=self.data_ttl_s)
            if request.object_name is not None:  # its object is not closed by its gap while this frame waits
                part = object_key(request.device, request.object_name)
                field = ADMITTED_PREFIX + frame_field(request.frame_id, image_digest(request.image))
                pipe.eval(_ADMIT, 1, part, field, key, self.data_ttl_s)
        pipe.zadd(PENDING_KEY, dict.fromkeys((key for key, _ in frames), self._clock()))
        pipe.execute()

    def get(self, key: str) -> FrameRequest | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[str]) -> list[FrameRequest | None]:
        """The frames stored under `keys`, in one round trip; None where the data has expired."""
        if not keys:
            return []
        return [
            None if blob is None else _decode(key, blob) for key, blob in zip(keys, self._redis.mget(keys), strict=True)
        ]

    def finish(self, key: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        finish_commands(pipe, [key])
        pipe.execute()

    def pending_count(self) -> int:
        return int(self._redis.zcard(PENDING_KEY))

    def claim_overdue(self, older_than_s: float, limit: int = 200) -> list[tuple[str, FrameRequest | None]]:
        """Pending frames last sent more than `older_than_s` ago, re-stamped as sent now.

        One sweeper at a time across all bridges (a short Redis lock); a frame whose data has expired
        comes back with None and is dropped from the pending set.
        """
        now = self._clock()
        if not self._redis.set(SWEEP_LOCK_KEY, b"1", nx=True, ex=max(1, int(older_than_s // 4))):
            return []
        keys = [
            k.decode() if isinstance(k, bytes) else k
            for k in self._redis.zrangebyscore(PENDING_KEY, 0, now - older_than_s, start=0, num=limit)
        ]
        found = list(zip(keys, self.get_many(keys), strict=True))
        expired = [key for key, request in found if request is None]
        alive = [key for key, request in found if request is not None]
        pipe = self._redis.pipeline(transaction=False)
        if expired:
            pipe.zrem(PENDING_KEY, *expired)
        if alive:
            pipe.zadd(PENDING_KEY, dict.fromkeys(alive, now), xx=True)
        pipe.execute()
        return found
