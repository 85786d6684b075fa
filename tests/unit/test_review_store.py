"""The review store: atomic items, bounds by count, bytes and age, listing, labels, and ids that are never paths."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from models.errors import ModelError, ReviewError, UnknownItem
from models.store.review_dir import DirectoryReviewStore
from models.store.review_items import (
    ALL,
    DISMISSED,
    EXPIRED,
    ITEM_ID,
    LABELLED,
    OPEN,
    OVER_BYTES,
    OVER_COUNT,
    TOO_LARGE,
)
from models.store.review_store import RESCAN_S, Added, ReviewStore
from worker.metrics import REVIEW_DROP_REASONS

DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer(frame_id: str, status: str = "unknown") -> dict[str, Any]:
    return {"schema": "partsight/1", "frame_id": frame_id, "device": "cam", "status": status, "top_k": []}


def keep(store: ReviewStore, frame_id: str, image: bytes = b"\xff\xd8\xff-jpeg", device: str = "cam") -> Added:
    return store.add(
        image,
        content_type="image/jpeg",
        device=device,
        frame_id=frame_id,
        received_at="2027-01-15T08:00:00.000Z",
        answer=answer(frame_id),
    )


def make(tmp_path: Path, clock: Clock | None = None, **bounds: Any) -> DirectoryReviewStore:
    limits = {"max_items": 100, "max_bytes": 1 << 20, "max_age_s": 7 * DAY, **bounds}
    return DirectoryReviewStore(tmp_path / "review", clock=clock or Clock(), **limits)


def frame_ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["frame_id"] for item in items]


def test_an_item_is_kept_with_its_image_answer_device_and_times(tmp_path: Path) -> None:
    store = make(tmp_path)
    added = keep(store, "f1", b"\x89PNG\r\n\x1a\n-png")
    assert added.id is not None and ITEM_ID.match(added.id) and added.evicted == {} and added.refused is None
    assert (added.items, added.bytes) == (1, 12)
    item = store.get(added.id)
    assert item["id"] == added.id and (item["device"], item["frame_id"], item["status"]) == ("cam", "f1", OPEN)
    assert item["answer"] == answer("f1") and item["received_at"] == "2027-01-15T08:00:00.000Z"
    assert item["kept_at"] == "2027-01-15T08:00:00.000Z" and item["bytes"] == 12  # the store's clock: 1.8e9 s
    assert store.image(added.id) == (b"\x89PNG\r\n\x1a\n-png", "image/jpeg")
    folder = tmp_path / "review" / "items" / added.id
    assert sorted(p.name for p in folder.iterdir()) == ["image", "item.json"]
    assert json.loads((folder / "item.json").read_text())["answer"]["frame_id"] == "f1"
    assert list((tmp_path / "review" / ".staging").iterdir()) == []  # staged, then renamed: nothing left behind
    assert store.stats() == (1, 12)


def test_ids_sort_as_the_times_they_were_kept(tmp_path: Path) -> None:
    clock = Clock()
    store = make(tmp_path, clock)
    ids = []
    for step in range(5):
        clock.now += 0.000_001 if step % 2 else 3600
        ids.append(keep(store, f"f{step}").id)
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_the_oldest_are_evicted_first_to_hold_the_count(tmp_path: Path) -> None:
    clock = Clock()
    store = make(tmp_path, clock, max_items=3)
    for index in range(3):
        clock.now += 1
        assert keep(store, f"f{index}").evicted == {}
    clock.now += 1
    added = keep(store, "f3")
    assert added.evicted == {OVER_COUNT: 1} and added.items == 3
    clock.now += 1
    assert keep(store, "f4").evicted == {OVER_COUNT: 1}
    assert frame_ids(store.list()) == ["f4", "f3", "f2"] and store.stats()[0] == 3


def test_the_oldest_are_evicted_first_to_hold_the_bytes(tmp_path: Path) -> None:
    clock = Clock()
    store = make(tmp_path, clock, max_bytes=250)
    for index in range(2):
        clock.now += 1
        keep(store, f"f{index}", b"x" * 100)
    clock.now += 1
    added = keep(store, "big", b"y" * 200)  # 400 bytes: both older ones must go
    assert added.evicted == {OVER_BYTES: 2} and (added.items, added.bytes) == (1, 200)
    assert frame_ids(store.list()) == ["big"]


def test_an_image_above_the_byte_bound_is_refused_and_nothing_is_evicted(tmp_path: Path) -> None:
    store = make(tmp_path, max_bytes=100)
    keep(store, "small", b"x" * 60)
    refused = keep(store, "huge", b"x" * 101)
    assert refused.id is None and refused.refused == TOO_LARGE and refused.evicted == {}
    assert (refused.items, refused.bytes) == (1, 60) and frame_ids(store.list()) == ["small"]


def test_items_older_than_the_age_bound_expire(tmp_path: Path) -> None:
    clock = Clock()
    store = make(tmp_path, clock, max_age_s=DAY)
    keep(store, "old")
    clock.now += 0.5 * DAY
    keep(store, "middle")
    clock.now += 0.6 * DAY  # "old" is 1.1 days old, "middle" 0.6
    added = keep(store, "new")
    assert added.evicted == {EXPIRED: 1}
    assert frame_ids(store.list()) == ["new", "middle"]


def test_listing_is_newest_first_bounded_and_filtered_by_status(tmp_path: Path) -> None:
    clock = Clock()
    store = make(tmp_path, clock)
    ids = []
    for index in range(5):
        clock.now += 1
        ids.append(keep(store, f"f{index}").id)
    store.dismiss(ids[1])
    labelled = store.label(ids[3], "ankle-boot")
    assert labelled["status"] == LABELLED and labelled["label"] == "ankle-boot" and "labelled_at" in labelled
    assert frame_ids(store.list()) == ["f4", "f2", "f0"]
    assert frame_ids(store.list(limit=2)) == ["f4", "f2"]
    assert frame_ids(store.list(status=DISMISSED)) == ["f1"]
    assert frame_ids(store.list(status=LABELLED)) == ["f3"]
    assert frame_ids(store.list(status=ALL)) == ["f4", "f3", "f2", "f1", "f0"]
    assert store.get(ids[1])["status"] == DISMISSED and "dismissed_at" in store.get(ids[1])
    item = store.get(ids[3])
    assert (item["label"], item["answer"]) == ("ankle-boot", answer("f3"))  # the answer stays as the device got it
    with pytest.raises(ReviewError, match="status must be one of"):
        store.list(status="closed")
    with pytest.raises(ReviewError, match="limit"):
        store.list(limit=0)


@pytest.mark.parametrize("label", ["", "   ", "x" * 129, "bad\nlabel", 7])
def test_a_label_that_is_not_a_product_name_is_refused(tmp_path: Path, label: Any) -> None:
    store = make(tmp_path)
    item_id = keep(store, "f1").id
    assert item_id is not None
    with pytest.raises(ReviewError):
        store.label(item_id, label)
    assert store.get(item_id)["status"] == OPEN


@pytest.mark.parametrize(
    "item_id",
    [
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "items/20270115T080000000000Z-0123abcd",
        "20270115T080000000000Z-0123abcd/../..",
        "20270115T080000000000Z-0123ABCD",
        "20270115T080000000000Z-0123abcd\n",
        "",
        ".staging",
        None,
    ],
)
def test_ids_that_are_not_item_ids_are_unknown_never_paths(tmp_path: Path, item_id: Any) -> None:
    store = make(tmp_path)
    (tmp_path / "secret").write_text("not yours")
    for call in (store.get, store.image, store.dismiss, lambda i: store.label(i, "p")):
        with pytest.raises(UnknownItem):
            call(item_id)
    assert issubclass(UnknownItem, ReviewError) and issubclass(ReviewError, ModelError)


def test_an_evicted_or_never_kept_item_is_unknown(tmp_path: Path) -> None:
    clock = Clock()
    store = make(tmp_path, clock, max_items=1)
    first = keep(store, "f1").id
    clock.now += 1
    keep(store, "f2")
    assert first is not None
    for call in (store.get, store.image, store.dismiss):
        with pytest.raises(UnknownItem):
            call(first)
    with pytest.raises(UnknownItem):
        store.get("20270115T080000000000Z-0123abcd")


def test_a_corrupt_item_json_is_logged_and_skipped_never_breaking_a_listing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = make(tmp_path, clock)
    ids = []
    for index in range(3):
        clock.now += 1
        ids.append(keep(store, f"f{index}").id)
    items = tmp_path / "review" / "items"
    (items / str(ids[1]) / "item.json").write_bytes(b"{not json")
    (items / str(ids[2]) / "item.json").write_text(json.dumps(["a list"]))
    (items / "README.txt").write_text("stray file, not an item")
    with caplog.at_level(logging.WARNING, logger="models.store.review_store"):
        assert frame_ids(store.list()) == ["f0"]
    assert sum("skipping review item" in record.getMessage() for record in caplog.records) == 2
    with pytest.raises(ReviewError, match="not JSON"):
        store.get(str(ids[1]))
    clock.now += 1
    assert keep(store, "f3").id is not None and store.stats()[0] == 4  # the corrupt ones still count


def test_two_stores_on_one_directory_keep_the_bounds_together(tmp_path: Path) -> None:
    """Two worker processes: each store sees the other's items and evicts them, oldest first."""
    clock = Clock()
    one, two = make(tmp_path, clock, max_items=4, max_bytes=450), make(tmp_path, clock, max_items=4, max_bytes=450)
    evicted = 0
    for index in range(12):
        clock.now += 1
        store = one if index % 2 else two
        added = keep(store, f"f{index}", b"x" * 100)
        evicted += sum(added.evicted.values())
        assert one.stats() == two.stats() == (added.items, added.bytes)
        assert added.items <= 4 and added.bytes <= 450
    assert frame_ids(one.list()) == ["f11", "f10", "f9", "f8"] and evicted == 8


def test_threads_adding_through_two_stores_keep_the_bounds_within_a_rescan(tmp_path: Path) -> None:
    """Racing writers may each miss an item the other just wrote, so the bounds may be passed by a few items until
    a store's view is RESCAN_S old; the next add then lists the store and evicts down to them."""
    clock = Clock()
    one, two = make(tmp_path, clock, max_items=5), make(tmp_path, clock, max_items=5)

    def add_many(store: ReviewStore, name: str) -> None:
        for index in range(40):
            keep(store, f"{name}{index}")

    threads = [threading.Thread(target=add_many, args=(s, n)) for s, n in ((one, "a"), (two, "b"), (one, "c"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert one.stats()[0] <= 8  # three writers: at most one unseen item each beyond the bound
    clock.now += RESCAN_S
    keep(one, "after")
    items, _ = one.stats()
    assert 0 < items <= 5 and two.stats()[0] == items and len(one.list(status=ALL)) == items
    assert list((tmp_path / "review" / ".staging").iterdir()) == []


def test_leftovers_of_a_process_killed_mid_write_are_cleaned(tmp_path: Path) -> None:
    store = make(tmp_path)
    stale = tmp_path / "review" / ".staging" / "20270115T080000000000Z-0123abcd.deadbeef"
    stale.mkdir()
    (stale / "image").write_bytes(b"half")
    fresh = tmp_path / "review" / ".staging" / "fresh.cafe"
    fresh.mkdir()
    os.utime(stale, (0, 0))
    make(tmp_path)  # the next process to open the store
    assert not stale.exists() and fresh.exists()  # a fresh entry may be another process writing now
    assert store.stats() == (0, 0)


def test_a_store_that_cannot_be_created_or_written_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(ReviewError, match="cannot create the review store"):
        DirectoryReviewStore(tmp_path / "file" / "review", max_items=1, max_bytes=1, max_age_s=1)
    with pytest.raises(ReviewError, match="positive"):
        DirectoryReviewStore(tmp_path / "ok", max_items=0, max_bytes=1, max_age_s=1)
    store = make(tmp_path)
    store.check_writable()  # writable: a probe file in staging, removed again
    assert list((tmp_path / "review" / ".staging").iterdir()) == []


def test_the_reasons_the_store_reports_are_the_workers_metric_labels() -> None:
    assert {TOO_LARGE, EXPIRED, OVER_COUNT, OVER_BYTES} <= set(REVIEW_DROP_REASONS)


def test_the_store_stays_light() -> None:
    """The HTTP API imports it: stdlib only, never numpy, torch, scikit-learn or Pillow."""
    code = (
        "import sys, models.store.review_dir; "
        "heavy = {'numpy', 'torch', 'sklearn', 'PIL', 'onnxruntime'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


class CountingStore(DirectoryReviewStore):
    """The directory store, counting how often it lists every item (and optionally blind to other writers, as the
    S3 store is)."""

    def __init__(self, *args: Any, blind: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listings = 0
        self.blind = blind

    def _scan(self) -> list[tuple[str, int]]:
        self.listings += 1
        return super()._scan()

    def _changed_elsewhere(self) -> bool:
        return False if self.blind else super()._changed_elsewhere()


def test_an_add_lists_the_store_only_when_its_view_is_stale_or_a_bound_is_passed(tmp_path: Path) -> None:
    """A listing per add made the review writer's cost grow with the queue (10,000 items by default)."""
    clock = Clock()
    store = CountingStore(tmp_path / "review", clock=clock, max_items=1000, max_bytes=1 << 20, max_age_s=DAY)
    for index in range(200):
        clock.now += 0.01
        added = keep(store, f"f{index}")
        assert (added.items, added.evicted) == (index + 1, {})
    assert store.listings == 1  # the first add; then a listing every RESCAN_S (2 s of this clock: none)
    clock.now += 10
    keep(store, "late")
    assert store.listings == 2


def test_a_full_store_evicts_from_its_view_without_listing_every_item(tmp_path: Path) -> None:
    """A queue at its bound (the steady state of a busy line) evicts one item per add: from this store's view."""
    clock = Clock()
    store = CountingStore(tmp_path / "review", clock=clock, max_items=3, max_bytes=1 << 20, max_age_s=DAY)
    evicted = []
    for index in range(6):
        clock.now += 0.01
        evicted.append(sum(keep(store, f"f{index}").evicted.values()))
    assert evicted == [0, 0, 0, 1, 1, 1] and store.listings == 1  # the first add only
    assert frame_ids(store.list()) == ["f5", "f4", "f3"] and store.stats() == (3, 3 * len(b"\xff\xd8\xff-jpeg"))


def test_another_writers_items_count_at_once_in_a_directory_and_within_the_rescan_where_unseen(tmp_path: Path) -> None:
    clock = Clock()
    bounds = {"max_items": 4, "max_bytes": 1 << 20, "max_age_s": DAY, "clock": clock}
    sees, blind, other = (
        CountingStore(tmp_path / "review", **bounds),
        CountingStore(tmp_path / "review", blind=True, **bounds),
        make(tmp_path, clock, max_items=4),
    )
    for store, name in ((sees, "a"), (blind, "b"), (other, "o0"), (other, "o1"), (other, "o2")):
        clock.now += 0.01  # ids sort as their times
        keep(store, name)  # sees and blind have listed the store once
    clock.now += 0.01
    added = keep(sees, "c")  # the other's three seen at once: b, o0, o1, o2 and c, so b goes
    assert (added.items, added.evicted) == (4, {OVER_COUNT: 1}) and sees.stats()[0] == 4
    clock.now += 1
    added = keep(blind, "d")  # its view is 1 s old: a, b and d; the five there are unseen yet
    assert (added.items, added.evicted) == (3, {})
    clock.now += 5
    added = keep(blind, "e")  # stale: listed again, six items, the two oldest evicted
    assert (added.items, added.evicted) == (4, {OVER_COUNT: 2})
    assert frame_ids(blind.list()) == ["e", "d", "c", "o2"]
