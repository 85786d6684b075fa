"""Exactly-once answers over at-least-once delivery: a Redis ledger of frames claimed and answered.

A delivery claims `<device, frame_id>` before work starts; the claim becomes "done" the moment the broker
takes the answer. A later delivery of a done frame is skipped. One that finds a live claim is told how
long it may still hold (a claim left by a killed worker lapses after `claim_ttl_s`) and comes back then:
it never blocks a worker thread while it waits, so no frame is lost and none answered twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

CLAIMED = b"claimed"
DONE = b"done"
MAX_RETRY_AFTER_S = 2.0


def ledger_key(device: str, frame_id: str) -> str:
    digest = hashlib.sha256(f"{device}\x00{frame_id}".encode()).hexdigest()[:32]
    return f"partsight:frame:{digest}"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a frame: `granted`, `answered` (skip it), or neither (busy: retry later)."""

    granted: bool = False
    answered: bool = False
    retry_after_s: float = 0.0


GRANTED = Claim(granted=True)
ANSWERED = Claim(answered=True)


class FrameLedger:
    def __init__(self, redis: Any, *, claim_ttl_s: int, done_ttl_s: int) -> None:
        self._redis = redis
        self.claim_ttl_s = claim_ttl_s
        self.done_ttl_s = done_ttl_s

    def claim(self, device: str, frame_id: str) -> Claim:
        key = ledger_key(device, frame_id)
        for _ in range(3):  # a claim can lapse between our calls; a few tries settle it
            if self._redis.set(key, CLAIMED, nx=True, ex=self.claim_ttl_s):
                return GRANTED
            state = self._redis.get(key)
            if state == DONE:
                return ANSWERED
            if state is not None:
                # come back when the claim would lapse, but look again at least every MAX_RETRY_AFTER_S:
                # a live holder usually finishes in a fraction of a second
                remaining_s = self._redis.pttl(key) / 1000
                return Claim(retry_after_s=min(MAX_RETRY_AFTER_S, max(0.1, remaining_s)))
        return Claim(retry_after_s=0.1)

    def done(self, device: str, frame_id: str) -> None:
        self._redis.set(ledger_key(device, frame_id), DONE, ex=self.done_ttl_s)

    def release(self, device: str, frame_id: str) -> None:
        """Give a claim back (the answer could not be published) so a retry can take it at once."""
        self._redis.delete(ledger_key(device, frame_id))
