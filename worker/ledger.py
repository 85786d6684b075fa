"""Exactly-once answers over at-least-once delivery: a Redis ledger of frames claimed and answered.

A delivery claims its frame before work starts; the claim becomes "done" the moment the broker has taken the
answer. A later delivery of a done frame is skipped. One that finds a live claim is told how long it may still
hold (a claim left by a killed worker lapses after `claim_ttl_s`) and comes back then: it never blocks a
worker thread while it waits, so no frame is lost and none answered twice.

A frame is (device, frame_id, digest of its image bytes): a device that restarts and counts its frame ids from
0 again sends new images under old ids, and those are new frames, answered; the same id with the same bytes
is a repeat, skipped. A task without a digest (sent by a bridge from before windows) keys on (device,
frame_id) alone, as the ledger always did, so frames in flight across an upgrade are still answered once.

A window of frames is claimed in one round trip and settled (answered, released, data removed) in another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.framestore import finish_commands

CLAIMED = b"claimed"
DONE = b"done"
MAX_RETRY_AFTER_S = 2.0


def ledger_key(device: str, frame_id: str, digest: str = "") -> str:
    seed = f"{device}\x00{frame_id}" + (f"\x00{digest}" if digest else "")
    return f"partsight:frame:{hashlib.sha256(seed.encode()).hexdigest()[:32]}"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a frame: `granted`, `answered` (skip it), or neither (busy: retry later)."""

    granted: bool = False
    answered: bool = False
    retry_after_s: float = 0.0


GRANTED = Claim(granted=True)
ANSWERED = Claim(answered=True)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one task ends with, written in one round trip: frames answered (done), claims given back so a
    retry can take them at once (released), and frame data no longer needed (finished keys)."""

    done: Sequence[str] = ()
    released: Sequence[str] = ()
    finished: Sequence[str] = ()


class FrameLedger:
    def __init__(self, redis: Any, *, claim_ttl_s: int, done_ttl_s: int) -> None:
        self._redis = redis
        self.claim_ttl_s = claim_ttl_s
        self.done_ttl_s = done_ttl_s

    def claim(self, device: str, frame_id: str, digest: str = "") -> Claim:
        return self.claim_many([ledger_key(device, frame_id, digest)])[0]

    def claim_many(self, keys: Sequence[str]) -> list[Claim]:
        """Claim each ledger key, all in one round trip: SET NX, then what the key holds and how long it lives."""
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, CLAIMED, nx=True, ex=self.claim_ttl_s)
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute()
        return [_claim_of(*replies[3 * i : 3 * i + 3]) for i in range(len(keys))]

    def done(self, device: str, frame_id: str, digest: str = "") -> None:
        self.settle(Settlement(done=[ledger_key(device, frame_id, digest)]))

    def release(self, device: str, frame_id: str, digest: str = "") -> None:
        """Give a claim back (the answer could not be published) so a retry can take it at once."""
        self.settle(Settlement(released=[ledger_key(device, frame_id, digest)]))

    def settle(self, settlement: Settlement) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key in settlement.done:
            pipe.set(key, DONE, ex=self.done_ttl_s)
        if settlement.released:
            pipe.delete(*settlement.released)
        finish_commands(pipe, list(settlement.finished))
        pipe.execute()


def _claim_of(granted: Any, state: Any, ttl_ms: Any) -> Claim:
    if granted:
        return GRANTED
    if state == DONE:
        return ANSWERED
    if state is None:  # the other claim lapsed between our SET and GET: try again at once
        return Claim(retry_after_s=0.1)
    # come back when the claim would lapse, but look again at least every MAX_RETRY_AFTER_S: a live holder
    # usually finishes in a fraction of a second
    return Claim(retry_after_s=min(MAX_RETRY_AFTER_S, max(0.1, int(ttl_ms) / 1000)))
