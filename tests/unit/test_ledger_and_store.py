from __future__ import annotations

from broker.contract import FrameRequest
from broker.framestore import PENDING_KEY, FrameStore, frame_key, task_reference
from tests.unit.fakes import FakeRedis
from worker.ledger import FrameLedger


def make_ledger(redis: FakeRedis) -> FrameLedger:
    return FrameLedger(redis, claim_ttl_s=3, done_ttl_s=100)


def test_first_delivery_claims_and_an_answered_frame_is_skipped() -> None:
    redis = FakeRedis()
    ledger = make_ledger(redis)
    assert ledger.claim("cam", "f1").granted
    ledger.done("cam", "f1")
    assert ledger.claim("cam", "f1").answered
    assert ledger.claim("other-cam", "f1").granted  # frame ids are per device


def test_a_claim_left_by_a_dead_worker_says_when_to_come_back_and_then_lapses() -> None:
    redis = FakeRedis()
    ledger = make_ledger(redis)
    assert ledger.claim("cam", "f1").granted  # this worker dies without done()
    redis.now = 1.0
    busy = ledger.claim("cam", "f1")  # the redelivery is not blocked: it is told to retry later
    assert not busy.granted and not busy.answered and busy.retry_after_s == 2.0
    redis.now += busy.retry_after_s
    assert ledger.claim("cam", "f1").granted


def test_a_long_claim_is_looked_at_again_every_two_seconds() -> None:
    redis = FakeRedis()
    ledger = FrameLedger(redis, claim_ttl_s=30, done_ttl_s=100)
    assert ledger.claim("cam", "f1").granted
    assert ledger.claim("cam", "f1").retry_after_s == 2.0


def test_a_released_claim_is_taken_at_once() -> None:
    redis = FakeRedis()
    ledger = make_ledger(redis)
    assert ledger.claim("cam", "f1").granted
    ledger.release("cam", "f1")
    assert ledger.claim("cam", "f1").granted


def test_frame_store_round_trip_and_finish() -> None:
    redis = FakeRedis()
    store = FrameStore(redis, data_ttl_s=60, clock=lambda: redis.now)
    request = FrameRequest(device="cam", frame_id="f1", image=b"\xff\xd8", received_at=1.5)
    key = frame_key(request)
    assert key == frame_key(request)  # a retried enqueue stores under the same key
    store.put(key, request)
    assert store.get(key) == request and store.pending_count() == 1
    assert task_reference(key, request) == {"frame_key": key, "device": "cam", "frame_id": "f1"}
    store.finish(key)
    assert store.get(key) is None and store.pending_count() == 0


def test_overdue_frames_are_handed_back_once_per_period() -> None:
    redis = FakeRedis()
    store = FrameStore(redis, data_ttl_s=60, clock=lambda: redis.now)
    request = FrameRequest(device="cam", frame_id="f1", image=b"x", received_at=0)
    store.put(frame_key(request), request)
    assert store.claim_overdue(10) == []  # not overdue yet (and the sweep lock is now held)
    redis.now = 20
    overdue = store.claim_overdue(10)
    assert overdue == [(frame_key(request), request)]
    assert redis.zsets[PENDING_KEY][frame_key(request)] == 20  # re-stamped as sent now
    redis.now = 70  # the frame data has expired
    assert store.claim_overdue(10) == [(frame_key(request), None)] and store.pending_count() == 0
