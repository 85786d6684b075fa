"""The review queue's store: frames the service could not name, or barely named, kept with their image and answer
for an operator, bounded by count, bytes and age, shared by several worker processes and the API.

ReviewStore implements the interface once over a few primitives each backend writes: a directory
(models/store/review_dir.py, DirectoryReviewStore) or an S3-compatible bucket (models/store/review_s3.py,
S3ReviewStore). Stdlib only: the HTTP API imports it too.
"""

from __future__ import annotations

import builtins  # the store's own `list` method shadows the builtin in its annotations
import logging
import threading
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.errors import ReviewError, UnknownItem
from models.store.review_items import (
    ALL,
    IMAGE_FILE,
    ITEM_FILE,
    OCTETS,
    OPEN,
    TOO_LARGE,
    check_bounds,
    check_item_id,
    check_listing,
    dismiss_changes,
    encode_record,
    eviction_reason,
    expiry_cutoff,
    item_document,
    label_changes,
    new_id,
    parse_item,
)

logger = logging.getLogger(__name__)

# How stale a store's view of the items other processes added or evicted may grow: an add lists the whole store
# only when its view is this old (or the backend saw another writer), never per item, and evicts from that view;
# the bounds then hold across processes within this many seconds (measured: a listing per add cost the worker's review
# thread a third of a frame's CPU at 10,000 items, docs/performance.md).
RESCAN_S = 5.0

ID_TRIES = 3  # a clash needs the same microsecond and 32 random bits: never twice


@dataclass(frozen=True, slots=True)
class Added:
    """What one add did: the new item's id (None when refused, with the reason), how many items it removed to
    hold the bounds, by reason (expired, evicted_count, evicted_bytes), and the store's items and image bytes
    after it (as stats() would say, without listing the store again)."""

    id: str | None
    evicted: Mapping[str, int] = field(default_factory=dict)
    refused: str | None = None
    items: int = 0
    bytes: int = 0


def newest_records(
    ids: Iterable[str], read: Callable[[str], dict[str, Any]], limit: int, status: str
) -> list[dict[str, Any]]:
    """Up to `limit` records of one status (or ALL), read in the order of `ids` (newest first); an item evicted
    since the listing is skipped, a corrupt one logged and skipped."""
    found: list[dict[str, Any]] = []
    for item_id in ids:
        try:
            record = read(item_id)
        except UnknownItem:  # evicted since the listing
            continue
        except ReviewError as exc:
            logger.warning("skipping review item %s: %s", item_id, exc)
            continue
        if status in (ALL, record.get("status")):
            found.append(record)
            if len(found) >= limit:
                break
    return found


class ReviewStore(ABC):
    """Items bounded: at most `max_items`, `max_bytes` of images, none older than `max_age_s`.

    Several processes may add, evict, list and label at once; an item another process removed meanwhile is simply
    gone (UnknownItem). Sizes count the images (item.json is a few KiB). One store serves several threads (the
    API's); its evictions run one at a time. Every error is a ReviewError (UnknownItem for an id of no item).

    A backend writes the primitives below; those that `_enforce` and `stats` call (`_scan`, `_remove`) run under
    the store's lock.
    """

    def __init__(
        self,
        *,
        max_items: int,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float],
        rescan_s: float = RESCAN_S,
    ) -> None:
        check_bounds(max_items, max_bytes, max_age_s)
        self.max_items, self.max_bytes, self.max_age_s = max_items, max_bytes, max_age_s
        self.rescan_s = rescan_s
        self._clock = clock
        self._lock = threading.Lock()
        # (id, image bytes) of every item as this store last saw them, oldest first, their bytes, and when it listed
        # them (None: never yet)
        self._index: deque[tuple[str, int]] = deque()
        self._index_bytes = 0
        self._indexed_at: float | None = None

    @abstractmethod
    def check_writable(self) -> None:
        """ReviewError unless this process can write here (opening checks less: read-only volumes and credentials
        pass it)."""

    def add(
        self,
        image: bytes,
        *,
        content_type: str,
        device: str,
        frame_id: str,
        received_at: str,
        answer: Mapping[str, Any],
        features: Mapping[str, Any] | None = None,
    ) -> Added:
        """Keep one frame (with its features' record, worker.review_sink.FrameFeatures, when it has one), then evict
        (expired first, then oldest first) until the bounds hold again."""
        if len(image) > self.max_bytes:
            items, size = self.stats()
            return Added(None, refused=TOO_LARGE, items=items, bytes=size)
        now = self._clock()
        for _ in range(ID_TRIES):
            item_id = new_id(now)
            document = item_document(
                item_id,
                now,
                image,
                content_type=content_type,
                device=device,
                frame_id=frame_id,
                received_at=received_at,
                answer=answer,
                features=features,
            )
            if self._write_item(item_id, image, document, content_type):
                break
        else:
            raise ReviewError("no free review item id after three tries")
        with self._lock:
            evicted, items, size = self._enforce(now, (item_id, len(image)))
        return Added(item_id, evicted, items=items, bytes=size)

    def list(self, limit: int = 50, status: str = OPEN) -> builtins.list[dict[str, Any]]:
        """Up to `limit` items, newest first, of one status (or ALL). A corrupt item is logged and skipped."""
        check_listing(limit, status)
        return newest_records(reversed(self._ids()), self._read, limit, status)

    def get(self, item_id: str) -> dict[str, Any]:
        return self._read(check_item_id(item_id))

    def image(self, item_id: str) -> tuple[bytes, str]:
        """The image as the device sent it, and its content type."""
        record = self._read(check_item_id(item_id))
        data = self._read_file(item_id, IMAGE_FILE)
        return data, str(record.get("content_type") or OCTETS)

    def dismiss(self, item_id: str) -> dict[str, Any]:
        return self._update(check_item_id(item_id), dismiss_changes(self._clock()))

    def label(self, item_id: str, product: str, *, enrolled: bool = True) -> dict[str, Any]:
        """Record the operator's answer, and whether the API enrolled the item's image for it (a cluster labelled at
        once enrols a few of its items)."""
        return self._update(check_item_id(item_id), label_changes(product, self._clock(), enrolled=enrolled))

    def exists(self, item_id: str) -> bool:
        try:
            self._read(check_item_id(item_id))
        except UnknownItem:
            return False
        return True

    def dismiss_if_open(self, item_id: str) -> dict[str, Any] | None:
        """As dismiss, for an item still open; None for one labelled, dismissed or removed since (a cluster's items
        are acted on together: another operator, or a worker's eviction, may have got there first)."""
        return self._update_open(check_item_id(item_id), dismiss_changes(self._clock()))

    def label_if_open(self, item_id: str, product: str, *, enrolled: bool) -> dict[str, Any] | None:
        """As label, for an item still open; None otherwise (dismiss_if_open)."""
        return self._update_open(check_item_id(item_id), label_changes(product, self._clock(), enrolled=enrolled))

    def stats(self) -> tuple[int, int]:
        """Items and image bytes in the store now (every process's)."""
        with self._lock:
            self._reindex(self._clock(), self._scan())
            return len(self._index), self._index_bytes

    def _read(self, item_id: str) -> dict[str, Any]:
        return parse_item(self._read_file(item_id, ITEM_FILE), item_id)

    def _update(self, item_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Rewrite item.json with `changes` (the last of two concurrent writers wins)."""
        record = {**self._read(item_id), **changes}
        self._replace(item_id, encode_record(record))
        return record

    def _update_open(self, item_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """_update when the item is there and open, else None. The check and the write are two steps: two processes
        acting on one item at the same moment may both write (the last wins), as _update's writers do."""
        try:
            record = self._read(item_id)
            if record.get("status") != OPEN:
                return None
            updated = {**record, **changes}
            self._replace(item_id, encode_record(updated))
        except UnknownItem:
            return None
        return updated

    def _enforce(self, now: float, added: tuple[str, int]) -> tuple[dict[str, int], int, int]:
        """Remove expired items, then the oldest until count and bytes are within bounds; what it removed by reason,
        and the items and bytes left. The store is listed only when this store's view is stale (RESCAN_S, or the
        backend saw another writer); an item another process evicted first is simply not counted. Called with the
        lock."""
        listed_at = self._indexed_at
        if listed_at is None or not 0 <= now - listed_at < self.rescan_s or self._changed_elsewhere():
            self._reindex(now, self._scan_and_tidy())
        else:
            self._index.append(added)
            self._index_bytes += added[1]
        removed: Counter[str] = Counter()
        cutoff = expiry_cutoff(now, self.max_age_s)
        bounds = {"max_items": self.max_items, "max_bytes": self.max_bytes}
        while self._index:
            item_id, size = self._index[0]
            reason = eviction_reason(item_id, len(self._index), self._index_bytes, cutoff=cutoff, **bounds)
            if reason is None:
                break
            self._index.popleft()
            self._index_bytes -= size
            if self._remove(item_id):  # not counted when another process removed it first
                removed[reason] += 1
        return dict(removed), len(self._index), self._index_bytes

    def _reindex(self, now: float, sizes: Sequence[tuple[str, int]]) -> None:
        self._index = deque(sizes)
        self._index_bytes = sum(size for _, size in sizes)
        self._indexed_at = now
        self._seen()

    def _scan_and_tidy(self) -> builtins.list[tuple[str, int]]:
        """`_scan`, where a backend may also tidy what its listing finds (the S3 store's orphaned images)."""
        return self._scan()

    def _changed_elsewhere(self) -> bool:
        """Whether another writer changed the store since `_seen`, where a backend can tell cheaply; the base
        cannot, and relies on RESCAN_S."""
        return False

    def _seen(self) -> None:  # noqa: B027  # a hook: the base has nothing to note
        """The store was just listed: a backend that can tell later changes notes where it stands."""

    # the backend's primitives

    @abstractmethod
    def _write_item(self, item_id: str, image: bytes, document: bytes, content_type: str) -> bool:
        """Write a new item (its image, then its item.json `document`) so that no reader sees half of it; False,
        having written nothing, when the id is taken."""

    @abstractmethod
    def _ids(self) -> builtins.list[str]:
        """The ids of every item, oldest first; whatever is not an item is left alone."""

    @abstractmethod
    def _scan(self) -> builtins.list[tuple[str, int]]:
        """(id, image bytes) of every item, oldest first (an item without its image counts 0). Called with the lock."""

    @abstractmethod
    def _remove(self, item_id: str) -> bool:
        """Delete an item; False if another process deleted it first. Called with the lock."""

    @abstractmethod
    def _read_file(self, item_id: str, name: str) -> bytes:
        """An item's IMAGE_FILE or ITEM_FILE; UnknownItem when the item is not there."""

    @abstractmethod
    def _replace(self, item_id: str, document: bytes) -> None:
        """Replace an item's item.json in one step; UnknownItem when the item is gone (never brought back)."""
