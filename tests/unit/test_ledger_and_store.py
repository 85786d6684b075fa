from __future__ import annotations

from broker.contract import FrameRequest, image_digest
from broker.framestore import PENDING_KEY, FrameStore, frame_key, task_reference
from tests.unit.fakes import FakeRedis
from worker.ledger import FrameLedger, Settlement, ledger_key


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
    digest = image_digest(request.image)
    assert task_reference(key, request) == {"frame_key": key, "device": "cam", "frame_id": "f1", "digest": digest}
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


def test_a_window_is_claimed_in_one_call_each_frame_with_its_own_fate() -> None:
    redis = FakeRedis()
    ledger = make_ledger(redis)
    answered, held, new = (ledger_key("cam", f, "d") for f in ("answered", "held", "new"))
    ledger.settle(Settlement(done=[answered]))
    assert ledger.claim_many([held])[0].granted  # another delivery holds it
    claims = ledger.claim_many([answered, held, new])
    assert claims[0].answered and claims[2].granted
    assert not claims[1].granted and not claims[1].answered and claims[1].retry_after_s == 2.0


def test_the_image_digest_tells_a_new_frame_from_a_repeat_under_one_frame_id() -> None:
    redis = FakeRedis()
    ledger = make_ledger(redis)
    first, second = image_digest(b"\xff\xd8 first photo"), image_digest(b"\xff\xd8 second photo")
    assert ledger.claim("cam", "000001", first).granted
    ledger.done("cam", "000001", first)
    assert ledger.claim("cam", "000001", first).answered  # the same photo again: a repeat
    assert ledger.claim("cam", "000001", second).granted  # a restarted camera's new photo: a new frame


def test_a_frame_without_a_digest_keeps_the_key_ledgers_before_windows_wrote() -> None:
    """Frames in flight across an upgrade are still answered once: (device, frame_id) hashed as before."""
    import hashlib

    before = "partsight:frame:" + hashlib.sha256(b"cam\x00f1").hexdigest()[:32]
    assert ledger_key("cam", "f1") == before and ledger_key("cam", "f1", "digest") != before


def test_settling_records_answers_gives_back_claims_and_removes_frames_together() -> None:
    redis = FakeRedis()
    ledger, store = make_ledger(redis), FrameStore(redis, data_ttl_s=60, clock=lambda: redis.now)
    requests = [FrameRequest(device="cam", frame_id=f"f{i}", image=b"\xff\xd8", received_at=1.0) for i in range(3)]
    store.put_many([(frame_key(r), r) for r in requests])
    keys = [ledger_key("cam", r.frame_id) for r in requests]
    ledger.claim_many(keys)
    ledger.settle(Settlement(done=keys[:2], released=keys[2:], finished=[frame_key(r) for r in requests[:2]]))
    assert [c.answered for c in ledger.claim_many(keys[:2])] == [True, True]
    assert ledger.claim_many(keys[2:])[0].granted  # given back: taken at once
    assert store.pending_count() == 1 and store.get_many([frame_key(r) for r in requests])[:2] == [None, None]
