"""Exactly-once answers over at-least-once delivery: a Redis ledger of frames claimed and answered.

A delivery claims `<device, frame_id>` before work starts and marks it done after its answer is published.
A second delivery of a done frame is skipped; one that finds a live claim waits for it to finish or lapse
(a claim left by a killed worker lapses after `claim_ttl_s`), so no frame is lost and none answered twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

CLAIMED = b"claimed"
DONE = b"done"


def ledger_key(device: str, frame_id: str) -> str:
    digest = hashlib.sha256(f"{device}\x00{frame_id}".encode()).hexdigest()[:32]
    return f"partsight:frame:{digest}"


class FrameLedger:
    def __init__(
        self,
        redis: Any,
        *,
        claim_ttl_s: int,
        done_ttl_s: int,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.claim_ttl_s = claim_ttl_s
        self.done_ttl_s = done_ttl_s
        self._sleep = sleep
        self._clock = clock

    def claim(self, device: str, frame_id: str) -> bool:
        """True when this delivery must answer the frame; False when it was answered already."""
        key = ledger_key(device, frame_id)
        give_up = self._clock() + self.claim_ttl_s + 5
        delay = 0.02
        while True:
            if self._redis.set(key, CLAIMED, nx=True, ex=self.claim_ttl_s):
                return True
            state = self._redis.get(key)
            if state == DONE:
                return False
            if state is None:
                continue  # the claim lapsed between our two calls: try again
            if self._clock() > give_up:
                # a claim that outlived its own TTL: Redis would have dropped it; treat it as lapsed
                self._redis.set(key, CLAIMED, ex=self.claim_ttl_s)
                return True
            self._sleep(delay)
            delay = min(delay * 2, 0.5)

    def done(self, device: str, frame_id: str) -> None:
        self._redis.set(ledger_key(device, frame_id), DONE, ex=self.done_ttl_s)

    def release(self, device: str, frame_id: str) -> None:
        """Give a claim back (the answer could not be published) so a retry can take it at once."""
        self._redis.delete(ledger_key(device, frame_id))
