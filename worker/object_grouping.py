"""Objects for frames that name none: a device's consecutive frames are one object while the gap between them stays
under PARTSIGHT_OBJECT_GAP_MS and each looks like the one before it (cosine at or above the version's same-product
similarity, models.answer.same_product); a camera that shows each part once gets one-frame objects.

Each device's open object lives in Redis (its name, its last frame's time and features, float16), so frames of one
device answered by several workers at once still join one object: a frame joins through a compare-and-set on the
object the worker read, and one that lost the race reads again.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

AUTO_PREFIX = "partsight:object-auto:"
AUTO_NAME_PREFIX = "auto-"
RETRIES = 5

_JOIN = """
local current = redis.call('HGET', KEYS[1], 'name') or ''
if current ~= ARGV[1] then return {'retry'} end
local last = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
local at = tonumber(ARGV[2])
local name = ARGV[5]
if current ~= '' and ARGV[4] == '1' and math.abs(at - last) <= tonumber(ARGV[3]) then
  name = current
  if at < last then at = last end
end
redis.call('HSET', KEYS[1], 'name', name, 'at', tostring(at), 'vector', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return {'ok', name}
"""


@dataclass(frozen=True, slots=True)
class Unnamed:
    """A frame without an `object`: its device, when the bridge received it, and its features."""

    device: str
    received_at: float
    features: np.ndarray


def auto_key(device: str) -> str:
    return AUTO_PREFIX + hashlib.sha256(device.encode()).hexdigest()[:32]


def new_name() -> str:
    return AUTO_NAME_PREFIX + uuid.uuid4().hex[:16]


def encoded(vector: np.ndarray) -> str:
    unit = np.asarray(vector, dtype=np.float32)
    unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
    return base64.b64encode(unit.astype(np.float16).tobytes()).decode("ascii")


def alike(previous: str, vector: np.ndarray, similarity: float | None) -> bool:
    """Whether a frame looks like its device's last one: False without a similarity or a readable vector."""
    if similarity is None or not previous:
        return False
    try:
        last = np.frombuffer(base64.b64decode(previous), dtype=np.float16).astype(np.float32)
    except ValueError:
        return False
    current = np.asarray(vector, dtype=np.float32)
    if last.shape != current.shape:  # a frame of another version's feature space
        return False
    norm = float(np.linalg.norm(current)) * float(np.linalg.norm(last))
    return norm > 0 and float(current @ last) / norm >= similarity


class AutoGrouping:
    def __init__(self, redis: Any, *, gap_s: float, ttl_s: int, make_name: Callable[[], str] = new_name) -> None:
        self._redis = redis
        self._gap_s = gap_s
        self._ttl_s = ttl_s
        self._make_name = make_name
        self._join = redis.register_script(_JOIN)

    def assign(self, frames: Sequence[Unnamed], similarity: float | None) -> list[str]:
        """Each frame's object name, a device's frames taken in the order they were received."""
        names = [""] * len(frames)
        left: dict[str, tuple[str, str]] = {}  # device: (object, last vector) as this call's last join left them
        for index in sorted(range(len(frames)), key=lambda i: frames[i].received_at):
            names[index] = self._join_one(frames[index], similarity, left)
        return names

    def _join_one(self, frame: Unnamed, similarity: float | None, left: dict[str, tuple[str, str]]) -> str:
        """Join the device's object, or start one; a join that finds the object moved by another worker reads it
        again. A frame that keeps losing the race starts an object of its own."""
        key = auto_key(frame.device)
        vector = encoded(frame.features)
        for _ in range(RETRIES):
            if frame.device not in left:
                name, last = (_text(value) for value in self._redis.hmget(key, "name", "vector"))
                left[frame.device] = (name, last)
            current, last = left[frame.device]
            looks_alike = int(alike(last, frame.features, similarity))
            args = [current, repr(frame.received_at), repr(self._gap_s), looks_alike, self._make_name(), vector]
            reply = [_text(item) for item in self._join(keys=[key], args=[*args, self._ttl_s])]
            if reply[0] == "ok":
                left[frame.device] = (reply[1], vector)
                return reply[1]
            del left[frame.device]
        return self._make_name()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
