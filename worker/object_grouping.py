"""Objects for frames that name none: a device's consecutive frames are one object while the gap between them stays
under PARTSIGHT_OBJECT_GAP_MS and each looks like the one before it (cosine at or above the version's same-product
similarity, models.answer.same_product); a camera that shows each part once gets one-frame objects.

Each device's open object lives in Redis (its name, its newest frame's time and features, float16, with their
feature space: a frame of another space is like none), so frames of one device answered by several workers at once
still join one object: a window's frames of a device join through one compare-and-set on the object the worker read,
and a worker that lost the race reads again. Each frame's object is remembered by its ledger key, so a frame tried
again (a refused answer, a redelivery) keeps its object. A frame older than the device's newest one that joins
nothing is an object of its own and leaves the device's object be.

When a device's frame starts another object, the one before can take no more frames: the join marks it (`next` in
its hash in worker.object_book, beside `joined`, the count of frames put in it) and names it to the caller, so it is
decided as soon as every frame put in it has voted (worker.object_tracker), not a gap later; so is a late frame's
object of its own. Where that cannot be known (a window that failed after its join and was tried again, frames
grouped by a worker of an earlier release), the object waits for its gap as before.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.framestore import object_key
from worker.object_book import as_text, run_scripts
from worker.object_tracker import AUTO_NAME_PREFIX

AUTO_PREFIX = "partsight:object-auto:"
FRAME_OBJECT_PREFIX = "partsight:object-of:"  # a frame's ledger key: the object the grouping put it in
RETRIES = 5

# KEYS[1] the device's object; KEYS[2..n+1] each frame's remembered object; KEYS[n+2] the book's hash of the object
# the caller read (worker.object_book); KEYS[n+3..2n+2] the book's hash of each frame's fresh name. ARGV: the object
# the caller read ('' for none), the gap, the keys' lifetime, the newest frame's vector, then for each frame: its
# time, alike ('1' or '0', to the frame before it), a fresh name. Each frame put in an object counts in its hash's
# `joined`; an object no frame can join any more gets `next` = 1: the one a new one replaces as the device's, and a
# late frame's object of its own. Replies 'ok', each frame's object, then the objects the device moved on from.
_JOIN = """
local current = redis.call('HGET', KEYS[1], 'name') or ''
if current ~= ARGV[1] then return {'retry'} end
local last = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
local gap = tonumber(ARGV[2])
local count = (#KEYS - 2) / 2
local current_key = KEYS[count + 2]
local moved = false
local out = {'ok'}
local left = {}
local function kept(key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[3]) end
end
local function joined(key)
  redis.call('HINCRBY', key, 'joined', 1)
  kept(key)
end
for i = 1, count do
  local name = redis.call('GET', KEYS[i + 1])
  if not name then
    local base = 4 + (i - 1) * 3
    local at = tonumber(ARGV[base + 1])
    if current ~= '' and ARGV[base + 2] == '1' and math.abs(at - last) <= gap then
      name = current
      joined(current_key)
      if at > last then last = at end
      moved = true
    elseif at >= last then
      if current ~= '' then
        redis.call('HSET', current_key, 'next', '1')
        kept(current_key)
        table.insert(left, current)
      end
      name = ARGV[base + 3]
      current = name
      current_key = KEYS[count + 2 + i]
      joined(current_key)
      last = at
      moved = true
    else
      name = ARGV[base + 3]
      joined(KEYS[count + 2 + i])
      redis.call('HSET', KEYS[count + 2 + i], 'next', '1')
    end
    redis.call('SET', KEYS[i + 1], name, 'EX', ARGV[3])
  end
  table.insert(out, name)
end
if moved then
  redis.call('HSET', KEYS[1], 'name', current, 'at', tostring(last), 'vector', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
for _, name in ipairs(left) do table.insert(out, name) end
return out
"""


@dataclass(frozen=True, slots=True)
class Assigned:
    """Each frame's object name, in the frames' order, and the objects (worker.object_book's keys) their devices
    moved on from: a frame of the device started another, so no frame joins them any more."""

    names: list[str]
    moved_on: list[str]


@dataclass(frozen=True, slots=True)
class Unnamed:
    """A frame without an `object`: its device, when the bridge received it, its features and its ledger key."""

    device: str
    received_at: float
    features: np.ndarray
    frame_key: str = ""


def auto_key(device: str) -> str:
    return AUTO_PREFIX + hashlib.sha256(device.encode()).hexdigest()[:32]


def new_name() -> str:
    return AUTO_NAME_PREFIX + uuid.uuid4().hex[:16]


def encoded(vector: np.ndarray, space: str = "") -> str:
    """The vector, unit length, in float16 and base64, after the feature space it is of and a colon."""
    unit = np.asarray(vector, dtype=np.float32)
    unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
    return space + ":" + base64.b64encode(unit.astype(np.float16).tobytes()).decode("ascii")


def decoded(text: str, space: str = "") -> np.ndarray | None:
    """A vector as `encoded` wrote it in the feature space `space`; None for none, for one of another space (another
    version's features: a training, or a consolidation that re-centred the rows, with the same size), or for text
    that is not one."""
    written_in, _, body = text.rpartition(":")  # base64 has no colon
    if not body or written_in != space:
        return None
    try:
        return np.frombuffer(base64.b64decode(body), dtype=np.float16).astype(np.float32)
    except ValueError:
        return None


def alike(last: np.ndarray | None, vector: np.ndarray, similarity: float | None) -> bool:
    """Whether a frame looks like the one before it (`last`): False without a similarity or a last vector of the
    same size."""
    if similarity is None or last is None:
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

    def assign(self, frames: Sequence[Unnamed], similarity: float | None, space: str = "") -> Assigned:
        """Each frame's object name and the objects left behind: one read of every device's object and one join
        per device (two round trips), more only for a device another worker moved meanwhile. `space`: the feature
        space of the frames' vectors (models.bundle.ModelBundle.feature_space): a device's last frame of another
        space is compared with none."""
        names = [""] * len(frames)
        moved_on: list[str] = []
        by_device: dict[str, list[int]] = {}
        for index in sorted(range(len(frames)), key=lambda i: frames[i].received_at):
            by_device.setdefault(frames[index].device, []).append(index)
        devices = list(by_device)
        for _ in range(RETRIES):
            if not devices:
                break
            devices = self._join_devices(devices, by_device, frames, (similarity, space), (names, moved_on))
        for device in devices:  # other workers kept moving these devices' objects: objects of their own
            for index in by_device[device]:
                names[index] = self._make_name()
        return Assigned(names, moved_on)

    def _join_devices(
        self,
        devices: list[str],
        by_device: dict[str, list[int]],
        frames: Sequence[Unnamed],
        alike_by: tuple[float | None, str],
        found_so_far: tuple[list[str], list[str]],
    ) -> list[str]:
        """One attempt for each device, into `found_so_far` (each frame's name, the objects moved on from); the
        devices to try again."""
        names, moved_on = found_so_far
        similarity, space = alike_by
        pipe = self._redis.pipeline(transaction=False)
        for device in devices:
            pipe.hmget(auto_key(device), "name", "vector")
        calls = []
        for device, (name, vector) in zip(devices, pipe.execute(), strict=True):
            last, args, fresh = decoded(as_text(vector), space), [], []
            for index in by_device[device]:
                frame = frames[index]
                fresh.append(self._make_name())
                args += [repr(frame.received_at), int(alike(last, frame.features, similarity)), fresh[-1]]
                last = np.asarray(frame.features, dtype=np.float32)
            newest = encoded(frames[by_device[device][-1]].features, space)  # what the next window compares with
            keys = [
                auto_key(device),
                *(self._frame_key(frames[index]) for index in by_device[device]),
                object_key(device, as_text(name)),
                *(object_key(device, made) for made in fresh),
            ]
            calls.append((self._join, keys, [as_text(name), repr(self._gap_s), self._ttl_s, newest, *args]))
        again = []
        for device, reply in zip(devices, run_scripts(self._redis, calls), strict=True):
            found = [as_text(item) for item in reply]
            if found[0] != "ok":
                again.append(device)
                continue
            count = len(by_device[device])
            for index, name in zip(by_device[device], found[1 : count + 1], strict=True):
                names[index] = name
            moved_on.extend(object_key(device, name) for name in found[count + 1 :])
        return again

    @staticmethod
    def _frame_key(frame: Unnamed) -> str:
        seed = frame.frame_key or uuid.uuid4().hex  # a frame without a ledger key is grouped once, as it comes
        return FRAME_OBJECT_PREFIX + hashlib.sha256(seed.encode()).hexdigest()[:32]
