"""Objects in Redis, beside the frames' ledger: each object's frames, its deadline, its one decision and its event.

One hash per (device, object) holds each frame's vote (models.answer.object_rule.FrameVote) until the object is
decided (and, for an object the worker grouped, `joined`: the frames put in it, and `next` once no frame can join
it any more; worker.object_grouping). A sorted set of open objects is scored by each one's deadline (its last
frame plus the gap), so any worker can close an object whose device went quiet, including one whose worker was
killed mid-object.

The decision is claimed once: a claim (`claim_many`) succeeds only for an object not yet decided whose frame count
is still the one the caller decided on (a frame appended meanwhile makes it read and decide again), so exactly one
caller ever gets it, and the event names every frame the object had. The event then waits in an outbox (a sorted set
scored by when to publish it again) until the broker has taken it: a worker killed between the claim and the
PUBACK leaves it there for another to publish. A decided object keeps only its `decided` mark for `keep_s`, so a
late frame of it is answered `decided` and starts nothing new. The bridge marks each frame it admits into an
object (broker.framestore), so the gap never closes an object while one of its frames still waits in the queue
(a worker killed, restarting, or behind).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from broker.framestore import ADMITTED_PREFIX, VOTE_PREFIX

OPEN_KEY = "partsight:objects:open"
OUTBOX_KEY = "partsight:objects:outbox"
PENDING, DECIDED = "pending", "decided"
CLAIMED, ALREADY_DECIDED, GONE, CHANGED = 1, 0, -1, -2

_APPEND = """
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('HGET', KEYS[1], 'decided') then return {'decided'} end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('HINCRBY', KEYS[1], 'frames', 1) end
redis.call('HSETNX', KEYS[1], 'device', ARGV[3])
redis.call('HSETNX', KEYS[1], 'object', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[1], 'line', ARGV[5]) end
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'ended', '1') end
redis.call('EXPIRE', KEYS[1], ARGV[7])
local now = redis.call('TIME')
local deadline = tonumber(now[1]) + tonumber(now[2]) / 1000000 + tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], 'GT', tostring(deadline), KEYS[1])
return {'pending', unpack(redis.call('HGETALL', KEYS[1]))}
"""

_CLAIM = """
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('HGET', KEYS[1], 'decided') then redis.call('ZREM', KEYS[2], KEYS[1]) return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], KEYS[1]) return -1 end
if redis.call('HGET', KEYS[1], 'frames') ~= ARGV[4] then return -2 end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local kind = string.sub(field, 1, 2)
  if kind == 'v:' or kind == 'a:' then redis.call('HDEL', KEYS[1], field) end
end
redis.call('HSET', KEYS[1], 'decided', '1', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], KEYS[1])
local now = redis.call('TIME')
redis.call('ZADD', KEYS[3], tostring(tonumber(now[1]) + tonumber(now[2]) / 1000000 + tonumber(ARGV[2])), KEYS[1])
return 1
"""

_PUBLISHED = """
redis.call('ZREM', KEYS[2], KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HDEL', KEYS[1], 'event')
  redis.call('HSET', KEYS[1], 'published', '1')
end
return 1
"""

_LEASE = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tostring(now), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, key in ipairs(due) do
  local event = redis.call('HGET', key, 'event')
  if event then
    redis.call('ZADD', KEYS[1], tostring(now + tonumber(ARGV[1])), key)
    table.insert(out, key)
    table.insert(out, event)
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Append:
    """One frame added to its object."""

    key: str
    device: str
    name: str
    vote_field: str  # unique per frame: a redelivered frame is not counted twice
    vote: str  # its FrameVote record, JSON
    line: str | None
    ended: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """An object's decision, claimed only while the object still has the `frames` it was decided on."""

    key: str
    event: str
    frames: int
    keep_s: int


@dataclass(frozen=True, slots=True)
class ObjectState:
    """An object as one read of Redis found it: decided, or pending with its fields (votes under VOTE_PREFIX)."""

    key: str
    state: str
    fields: dict[str, str]

    @property
    def frames(self) -> int:
        return int(self.fields.get("frames", "0"))


def run_scripts(
    redis: Any, calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]], reads: Sequence[str] = ()
) -> list[Any]:
    """Lua scripts (redis-py Script objects with their keys and arguments) in one round trip, by their sha, then
    HGETALL of each of `reads` (their replies after the scripts'); a Redis that forgot the scripts (restarted) is
    given them again and the calls made again (each script here may run twice: it changes nothing the second
    time)."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        for key in reads:
            pipe.hgetall(key)
        try:
            return list(pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            for script in {script.sha: script for script, _, _ in calls}.values():
                redis.script_load(script.script)
    raise AssertionError("unreachable")


def redis_now(redis: Any) -> float:
    """Redis's clock: deadlines are set and compared on one clock, whichever worker's host runs fast."""
    seconds, micros = redis.time()
    return float(seconds) + float(micros) / 1e6


def as_text(value: Any) -> str:
    """A Redis reply as text ("" for nil)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _read(key: str, raw: Mapping[Any, Any]) -> ObjectState | None:
    """An object's hash as HGETALL gave it; None where it is gone."""
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    return None if not fields else ObjectState(key, DECIDED if "decided" in fields else PENDING, fields)


def _state(key: str, reply: Sequence[Any]) -> ObjectState:
    flat = [as_text(item) for item in reply]
    return ObjectState(key, flat[0], dict(zip(flat[1::2], flat[2::2], strict=True)))


class ObjectBook:
    def __init__(self, redis: Any, *, open_ttl_s: int) -> None:
        """`open_ttl_s`: how long an open object lives untouched (a safety net: the deadline sweep closes it long
        before)."""
        self._redis = redis
        self.open_ttl_s = open_ttl_s
        self._append = redis.register_script(_APPEND)
        self._claim = redis.register_script(_CLAIM)
        self._published = redis.register_script(_PUBLISHED)
        self._lease = redis.register_script(_LEASE)

    def append_many(self, appends: Sequence[Append], gap_s: float) -> list[ObjectState]:
        """Add each frame to its object (in order, one round trip), its deadline `gap_s` past Redis's clock, and
        return each object's state after it."""
        return self.append_and_read(appends, gap_s, ())[0]

    def append_and_read(
        self, appends: Sequence[Append], gap_s: float, keys: Sequence[str]
    ) -> tuple[list[ObjectState], list[ObjectState | None]]:
        """append_many, and the objects of `keys` as they are after it (read_many), in the same round trip."""
        if not appends and not keys:
            return [], []
        calls = [
            (
                self._append,
                [item.key, OPEN_KEY],
                [
                    item.vote_field,
                    item.vote,
                    item.device,
                    item.name,
                    item.line or "",
                    repr(gap_s),
                    self.open_ttl_s,
                    int(item.ended),
                ],
            )
            for item in appends
        ]
        replies = run_scripts(self._redis, calls, reads=keys)
        appended = [_state(item.key, reply) for item, reply in zip(appends, replies[: len(appends)], strict=True)]
        return appended, [_read(key, raw) for key, raw in zip(keys, replies[len(appends) :], strict=True)]

    def read_many(self, keys: Sequence[str]) -> list[ObjectState | None]:
        """Objects as they are now; None where the hash is gone."""
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [_read(key, raw) for key, raw in zip(keys, pipe.execute(), strict=True)]

    def claim_many(self, claims: Sequence[Claim], *, lease_s: float) -> list[int]:
        """Each claim's outcome, in one round trip: CLAIMED (this caller publishes its event; anyone may publish it
        again `lease_s` later if it is still not confirmed; the decided object is remembered its `keep_s`),
        ALREADY_DECIDED, GONE, or CHANGED (a frame came: decide again)."""
        calls = [
            (self._claim, [item.key, OPEN_KEY, OUTBOX_KEY], [item.event, repr(lease_s), item.keep_s, str(item.frames)])
            for item in claims
        ]
        return [int(reply) for reply in run_scripts(self._redis, calls)] if calls else []

    def published(self, keys: Sequence[str]) -> None:
        if keys:
            run_scripts(self._redis, [(self._published, [key, OUTBOX_KEY], []) for key in keys])

    def now(self) -> float:
        return redis_now(self._redis)

    def due(self, now: float, limit: int = 100) -> list[str]:
        """Open objects whose deadline (on Redis's clock: `now` from `now()`) has passed."""
        return [as_text(key) for key in self._redis.zrangebyscore(OPEN_KEY, "-inf", now, start=0, num=limit)]

    def still_coming(self, state: ObjectState) -> bool:
        """Whether a frame the bridge admitted into this object still waits for a worker (its data is stored and
        it has no vote yet): a worker down or a queue behind must not close the object by its gap."""
        waiting = [
            data
            for field, data in state.fields.items()
            if field.startswith(ADMITTED_PREFIX) and VOTE_PREFIX + field[len(ADMITTED_PREFIX) :] not in state.fields
        ]
        return bool(waiting) and int(self._redis.exists(*waiting)) > 0

    def postpone(self, key: str, deadline: float) -> None:
        """Move an open object's deadline (only while it is still open)."""
        self._redis.zadd(OPEN_KEY, {key: deadline}, xx=True)

    def drop_open(self, key: str) -> None:
        self._redis.zrem(OPEN_KEY, key)

    def lease_unpublished(self, lease_s: float, limit: int = 100) -> list[tuple[str, str]]:
        """Events whose publication is overdue, each leased to this caller for `lease_s`."""
        flat = [as_text(item) for item in self._lease(keys=[OUTBOX_KEY], args=[repr(lease_s), limit])]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def counts(self) -> tuple[int, int]:
        """(open objects, events waiting to be published)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(OPEN_KEY)
        pipe.zcard(OUTBOX_KEY)
        open_count, outbox = pipe.execute()
        return int(open_count), int(outbox)
