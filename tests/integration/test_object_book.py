"""Objects in a real Redis: one decision per object, across concurrent workers, a worker that went away
mid-object, and an event whose publication was never confirmed."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import redis as redis_lib

from broker.framestore import object_key
from models.answer.object_rule import FrameVote, ObjectRule
from partsight.testing.servers import ServerProcess, empty_database
from worker.object_book import OPEN_KEY, OUTBOX_KEY, ObjectBook
from worker.object_grouping import AutoGrouping, Unnamed
from worker.object_tracker import Decided, ObjectSettings, ObjectTracker, Seen

MODEL = SimpleNamespace(
    object_rule=ObjectRule(single_threshold=0.5, more_thresholds=(0.5,)),
    catalog={"drill": {"name": "Cordless drill"}},
    info=SimpleNamespace(name="m", version="v1"),
)
_frames = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(redis: ServerProcess) -> Iterator[redis_lib.Redis]:
    with empty_database(redis, 14) as connection:
        yield connection


def tracker(
    client: redis_lib.Redis, clock: Clock, decided: list[Decided] | None = None, **settings: Any
) -> ObjectTracker:
    book = ObjectBook(client, open_ttl_s=600)
    sink = decided if decided is not None else []
    return ObjectTracker(
        book, ObjectSettings(**settings), on_decided=lambda item, reason: sink.append(item), clock=clock
    )


def frame(
    name: str, product: str | None = "drill", novelty: float = 0.1, *, end: bool = False, device: str = "cam"
) -> Seen:
    index = next(_frames)
    return Seen(device, name, end, None, FrameVote(f"f{index}", 100.0 + index, product, "tools", 0.9, novelty, True))


def test_an_object_is_decided_once_when_three_frames_agree(client: redis_lib.Redis) -> None:
    clock = Clock()
    objects = tracker(client, clock)
    states, decided = objects.track([frame("p1"), frame("p1")], MODEL)
    assert states == ["pending", "pending"] and decided == []
    third = frame("p1")
    states, decided = objects.track([third], MODEL)
    assert states == ["decided"] and len(decided) == 1
    event = decided[0].event
    assert (event["object"], event["product"], event["agreeing"], event["frames"], event["reason"]) == (
        "p1",
        "drill",
        3,
        3,
        "agreed",
    )
    assert event["catalog"] == {"name": "Cordless drill"} and event["frame_ids"][-1] == third.vote.frame_id
    late, again = objects.track([frame("p1")], MODEL)  # a late frame: answered decided, starts nothing new
    assert late == ["decided"] and again == []
    assert client.zscore(OPEN_KEY, object_key("cam", "p1")) is None
    assert client.zscore(OUTBOX_KEY, object_key("cam", "p1")) is not None  # until the broker takes the event
    assert not [field for field in client.hkeys(object_key("cam", "p1")) if field.startswith(b"v:")]


def test_the_same_frame_delivered_twice_counts_once(client: redis_lib.Redis) -> None:
    objects = tracker(client, Clock())
    first = frame("p2")
    objects.track([first, first], MODEL)
    states, decided = objects.track([first], MODEL)
    assert states == ["pending"] and decided == []
    assert client.hget(object_key("cam", "p2"), "frames") == b"1"


def test_object_end_decides_with_what_there_is(client: redis_lib.Redis) -> None:
    objects = tracker(client, Clock())
    states, decided = objects.track([frame("p3", "drill", 0.9), frame("p3", "drill", 0.95, end=True)], MODEL)
    assert states == ["decided", "decided"] and len(decided) == 1
    assert decided[0].event["product"] == "unknown" and decided[0].event["reason"] == "object_end"


def test_max_frames_ends_an_object_whose_frames_never_agree(client: redis_lib.Redis) -> None:
    objects = tracker(client, Clock(), max_frames=4)
    seen = [frame("p4", product) for product in ("drill", "saw", "drill", "saw")]
    states, decided = objects.track(seen, MODEL)
    assert states == ["decided"] * 4 and decided[0].event["reason"] == "max_frames"
    assert decided[0].event["product"] == "unknown" and decided[0].event["frames"] == 4


def test_another_worker_closes_an_object_whose_worker_went_away(client: redis_lib.Redis) -> None:
    clock = Clock()
    first = tracker(client, clock, gap_s=2.0)  # long enough that a loaded box reaches the first look within it
    first.track([frame("p5"), frame("p5")], MODEL)  # then this worker is gone
    other_client = redis_lib.Redis(host="127.0.0.1", port=client.connection_pool.connection_kwargs["port"], db=14)
    second = tracker(other_client, clock, gap_s=2.0)
    assert second.close_due(MODEL) == []  # the gap (on Redis's clock) has not passed
    time.sleep(2.1)
    decided = second.close_due(MODEL)
    assert len(decided) == 1 and decided[0].event["reason"] == "gap" and decided[0].event["frames"] == 2
    assert decided[0].event["product"] == "drill"  # two agreeing frames, under their threshold
    assert second.close_due(MODEL) == [] and first.close_due(MODEL) == []
    other_client.close()


def test_the_gap_waits_for_a_frame_the_bridge_admitted_and_no_worker_answered_yet(client: redis_lib.Redis) -> None:
    objects = tracker(client, Clock(), gap_s=0.2)
    seen = frame("p7")
    objects.track([seen], MODEL)
    part = object_key("cam", "p7")
    client.set("partsight:frame-data:queued", b"x")  # a frame of it waits in the queue (a worker is down)
    client.hset(part, "a:queued\x00d", "partsight:frame-data:queued")
    time.sleep(0.3)
    assert objects.close_due(MODEL) == []
    client.delete("partsight:frame-data:queued")  # answered (or expired) without joining: no more waiting
    time.sleep(0.3)
    assert len(objects.close_due(MODEL)) == 1


def test_concurrent_workers_and_sweepers_decide_each_object_exactly_once(client: redis_lib.Redis) -> None:
    clock = Clock()
    decided: list[Decided] = []
    port = client.connection_pool.connection_kwargs["port"]
    workers = [tracker(redis_lib.Redis(host="127.0.0.1", port=port, db=14), clock, decided) for _ in range(4)]
    names = [f"obj-{i}" for i in range(30)]
    frames_of = {name: [frame(name, "drill" if i % 3 else "saw") for i in range(5)] for name in names}
    start = threading.Barrier(5)

    def work(index: int) -> None:
        start.wait()
        for name in names:
            mine = [seen for i, seen in enumerate(frames_of[name]) if i % 4 == index]
            if mine:
                workers[index].track(mine, MODEL)

    def sweep() -> None:
        start.wait()
        for _ in range(50):
            clock.now += 0.05  # deadlines pass while frames are still coming: sweeps race the frames
            workers[0].close_due(MODEL)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)] + [threading.Thread(target=sweep)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.now += 10
    workers[1].close_due(MODEL)
    by_object: dict[str, int] = {}
    for item in decided:
        by_object[item.event["object"]] = by_object.get(item.event["object"], 0) + 1
        sent = {seen.vote.frame_id for seen in frames_of[item.event["object"]]}
        assert set(item.event["frame_ids"]) <= sent  # never frames the device did not send
    assert by_object == dict.fromkeys(names, 1)


def test_an_event_never_confirmed_is_published_again_from_the_outbox(client: redis_lib.Redis) -> None:
    book = ObjectBook(client, open_ttl_s=600)
    objects = ObjectTracker(book, ObjectSettings(lease_s=0.3), clock=Clock())
    _, decided = objects.track([frame("p6") for _ in range(3)], MODEL)
    assert book.lease_unpublished(0.3) == []  # its own worker is still publishing it
    time.sleep(0.4)  # that worker died before the broker confirmed it
    overdue = book.lease_unpublished(0.3)
    assert [key for key, _ in overdue] == [decided[0].key] and '"object":"p6"' in overdue[0][1]
    assert book.lease_unpublished(0.3) == []  # leased to the one publishing it again
    book.published([decided[0].key])
    time.sleep(0.4)
    assert book.lease_unpublished(0.3) == [] and book.counts() == (0, 0)


def vector(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def test_a_devices_frames_that_look_alike_and_come_close_are_one_object(client: redis_lib.Redis) -> None:
    grouping = AutoGrouping(client, gap_s=0.7, ttl_s=60)
    part, other = vector(1, 0, 0), vector(0, 1, 0)
    frames = [
        Unnamed("cam", 10.0, part),
        Unnamed("cam", 10.2, part * 0.9 + other * 0.05),  # the same part, moved a little: joins
        Unnamed("belt", 10.3, part),  # another device: its own object
        Unnamed("cam", 10.4, other),  # looks like something else: a new object
        Unnamed("cam", 11.5, other),  # alike, but after the gap: a new object
    ]
    assigned = grouping.assign(frames, similarity=0.9)
    names = assigned.names
    assert names[0] == names[1] and len({names[1], names[2], names[3], names[4]}) == 4
    assert all(name.startswith("auto-") for name in names)
    assert assigned.moved_on == [object_key("cam", names[0]), object_key("cam", names[3])]  # no frame joins them
    later = grouping.assign([Unnamed("cam", 11.6, other)], similarity=0.9)  # the next window goes on from there
    assert later.names == [names[4]] and later.moved_on == []
    alone = grouping.assign([Unnamed("solo", 1.0, part), Unnamed("solo", 1.1, part)], similarity=None).names
    assert alone[0] != alone[1]  # without a similarity, each frame is its own object
    first = grouping.assign([Unnamed("press", 20.0, part)], similarity=0.9, space="a").names
    assert grouping.assign([Unnamed("press", 20.1, part)], similarity=0.9, space="a").names == first
    # the same vector in another version's feature space (a re-centring keeps its size) is compared with nothing
    assert grouping.assign([Unnamed("press", 20.2, part)], similarity=0.9, space="b").names != first


def test_frames_of_one_device_answered_by_several_workers_at_once_join_one_object(client: redis_lib.Redis) -> None:
    port = client.connection_pool.connection_kwargs["port"]
    workers = [AutoGrouping(redis_lib.Redis(host="127.0.0.1", port=port, db=14), gap_s=5.0, ttl_s=60) for _ in range(4)]
    names: list[list[str]] = [[] for _ in workers]
    start = threading.Barrier(len(workers))

    def work(index: int) -> None:
        start.wait()
        for k in range(10):
            found = workers[index].assign([Unnamed("cam", 100.0 + k * 0.01 + index * 0.001, vector(1, 0))], 0.9)
            names[index] += found.names

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({name for found in names for name in found}) == 1  # 40 alike frames within the gap: one object
    assert client.hget(object_key("cam", names[0][0]), "joined") == b"40"  # each counted once, none lost to a race


def test_a_frame_tried_again_keeps_its_object_and_a_late_one_takes_nothing_over(client: redis_lib.Redis) -> None:
    grouping = AutoGrouping(client, gap_s=0.7, ttl_s=60)
    part, next_part = vector(1, 0, 0), vector(0, 1, 0)
    first = grouping.assign([Unnamed("cam", 10.0, part, "ledger-1"), Unnamed("cam", 10.2, part, "ledger-2")], 0.9).names
    assert first[0] == first[1]
    moved_on = grouping.assign([Unnamed("cam", 12.0, next_part, "ledger-3")], 0.9).names  # the next part
    # frame 2 tried again (its answer was refused, or it was delivered twice): it keeps its object, counted once
    assert grouping.assign([Unnamed("cam", 10.2, part, "ledger-2")], 0.9).names == [first[1]]
    assert client.hget(object_key("cam", first[0]), "joined") == b"2"
    # a frame older than the device's newest that joins nothing: an object of its own, the device's stays
    late = grouping.assign([Unnamed("cam", 10.4, vector(0, 0, 1), "ledger-4")], 0.9)
    assert late.names[0] not in (first[0], moved_on[0]) and late.moved_on == []
    assert client.hget(object_key("cam", late.names[0]), "next") == b"1"  # no frame can join it: its vote decides it
    assert grouping.assign([Unnamed("cam", 12.1, next_part, "ledger-5")], 0.9).names == moved_on


def test_a_grouped_object_is_decided_when_its_device_moves_on_once_every_frame_in_it_voted(
    client: redis_lib.Redis,
) -> None:
    grouping = AutoGrouping(client, gap_s=5.0, ttl_s=60)
    objects = tracker(client, Clock(), gap_s=5.0)
    part, next_part, third_part = vector(1, 0, 0), vector(0, 1, 0), vector(0, 0, 1)
    first = grouping.assign([Unnamed("cam", 10.0, part, "l-1"), Unnamed("cam", 10.1, part, "l-2")], 0.9)
    assert first.names[0] == first.names[1] and first.moved_on == []
    one, two = frame(first.names[0]), frame(first.names[1])
    assert objects.track([one], MODEL) == (["pending"], [])  # frame 2's worker has not answered it yet
    second = grouping.assign([Unnamed("cam", 10.2, next_part, "l-3")], 0.9)  # the next part, on another worker
    assert second.moved_on == [object_key("cam", first.names[0])]
    states, decided = objects.track([frame(second.names[0])], MODEL, second.moved_on)
    assert states == ["pending"] and decided == []  # the first part waits for its second frame's vote
    states, decided = objects.track([two], MODEL)  # which ends it: its device moved on
    assert states == ["decided"] and len(decided) == 1
    event = decided[0].event
    assert (event["reason"], event["frames"], event["product"]) == ("next_object", 2, "drill")
    assert event["frame_ids"] == [one.vote.frame_id, two.vote.frame_id]
    third = grouping.assign([Unnamed("cam", 10.3, third_part, "l-4")], 0.9)
    states, decided = objects.track([frame(third.names[0])], MODEL, third.moved_on)
    assert states == ["pending"] and [item.event["object"] for item in decided] == [second.names[0]]
    assert decided[0].event["reason"] == "next_object" and decided[0].event["frames"] == 1
    assert client.zscore(OPEN_KEY, object_key("cam", second.names[0])) is None  # no sweep will close it again
    assert objects.track([frame(first.names[0])], MODEL) == (["decided"], [])  # a late frame of a decided part
    # an object grouped by a worker of an earlier release (no `joined`) is left to its gap
    client.hset(object_key("cam", "auto-old"), "next", "1")
    states, decided = objects.track([frame("auto-old")], MODEL, [object_key("cam", "auto-old")])
    assert states == ["pending"] and decided == []
