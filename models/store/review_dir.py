"""The review queue's store: frames the service could not name, or barely named, kept with their image and answer
for an operator, bounded by count, bytes and age, in one directory that several worker processes share.

Layout: `<root>/items/<id>/image` (the bytes the device sent) and `<root>/items/<id>/item.json`; an item is
written under `<root>/.staging/` and appears in one rename, so no reader ever sees half of one. Stdlib only: the
HTTP API imports it too. models/store/review_s3.py keeps the same items in an S3-compatible bucket, with the pure pieces
below (ids, the item.json document, labels, which items the bounds evict) shared.
"""

from __future__ import annotations

import builtins  # the store's own `list` method shadows the builtin in its annotations
import errno
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.contract import rfc3339

from models.errors import ReviewError, UnknownItem

logger = logging.getLogger(__name__)

ITEMS, STAGING = "items", ".staging"
IMAGE_FILE, ITEM_FILE = "image", "item.json"
OPEN, DISMISSED, LABELLED = "open", "dismissed", "labelled"
STATUSES = (OPEN, DISMISSED, LABELLED)
ALL = "all"  # list(status=ALL): every item, whatever its status
# why an item was not kept (TOO_LARGE) or was removed to hold the bounds; the worker counts each by name
TOO_LARGE, EXPIRED, OVER_COUNT, OVER_BYTES = "too_large", "expired", "evicted_count", "evicted_bytes"
MAX_LABEL_CHARS = 128
STALE_STAGING_S = 3600.0  # a staging entry this old belongs to a process killed mid-write
_ID_TIME = "%Y%m%dT%H%M%S%fZ"
# fixed width, so ids sort as their times do; checked on every path that takes an id (no "..", "/", absolute path)
ITEM_ID = re.compile(r"\A[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}\Z")


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


def new_id(at: float) -> str:
    """Time-sortable and unique across processes: the time to the microsecond and 32 random bits."""
    return f"{_id_time(at)}-{secrets.token_hex(4)}"


def _id_time(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime(_ID_TIME)


def check_item_id(item_id: object) -> str:
    """The id itself when it is one; UnknownItem for anything else (never used as a path or a key)."""
    if not isinstance(item_id, str) or not ITEM_ID.match(item_id):
        raise UnknownItem(f"no review item {str(item_id)[:80]!r}")
    return item_id


def check_bounds(max_items: int, max_bytes: int, max_age_s: float) -> None:
    if max_items < 1 or max_bytes < 1 or max_age_s <= 0:
        raise ReviewError(f"review bounds must be positive: {max_items} items, {max_bytes} bytes, {max_age_s} s")


def check_listing(limit: int, status: str) -> None:
    if status != ALL and status not in STATUSES:
        raise ReviewError(f"status must be one of {', '.join((*STATUSES, ALL))}, got {status!r}")
    if limit < 1:
        raise ReviewError(f"limit must be at least 1, got {limit}")


def item_document(
    item_id: str,
    now: float,
    image: bytes,
    *,
    content_type: str,
    device: str,
    frame_id: str,
    received_at: str,
    answer: Mapping[str, Any],
) -> bytes:
    """The item.json of a new item, as UTF-8 JSON."""
    record = {
        "id": item_id,
        "device": device,
        "frame_id": frame_id,
        "received_at": received_at,
        "kept_at": rfc3339(now),
        "content_type": content_type,
        "bytes": len(image),
        "status": OPEN,
        "answer": answer,
    }
    try:
        return json.dumps(record, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ReviewError(f"the answer of frame {frame_id} cannot be stored as JSON: {exc}") from exc


def parse_item(raw: bytes, item_id: str) -> dict[str, Any]:
    """An item.json's record; ReviewError unless it is this item's."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReviewError(f"review item {item_id}: item.json is not JSON: {exc}") from exc
    if not isinstance(record, dict) or record.get("id") != item_id:
        raise ReviewError(f"review item {item_id}: item.json is not this item's record")
    return record


def dismiss_changes(now: float) -> dict[str, Any]:
    return {"status": DISMISSED, "dismissed_at": rfc3339(now)}


def label_changes(product: object, now: float) -> dict[str, Any]:
    """What labelling an item changes in its record; ReviewError for a label that is not a product name."""
    if not isinstance(product, str) or not product.strip() or len(product) > MAX_LABEL_CHARS:
        raise ReviewError(f"a label is a product name of 1 to {MAX_LABEL_CHARS} characters, got {product!r}")
    if not product.isprintable():
        raise ReviewError(f"a label must not hold control characters, got {product!r}")
    return {"status": LABELLED, "label": product, "labelled_at": rfc3339(now)}


def plan_evictions(
    sizes: Sequence[tuple[str, int]], now: float, *, max_items: int, max_bytes: int, max_age_s: float
) -> tuple[builtins.list[tuple[str, str]], int, int]:
    """Which items (oldest first, as `sizes` lists them) to remove and why: expired ones, then the oldest until
    count and bytes are within bounds; and the items and bytes left once they are gone."""
    cutoff = _id_time(now - max_age_s)  # ids sort as their times: an id below this is too old
    kept, total = len(sizes), sum(size for _, size in sizes)
    planned: list[tuple[str, str]] = []
    for item_id, size in sizes:
        if item_id < cutoff:
            reason = EXPIRED
        elif kept > max_items:
            reason = OVER_COUNT
        elif total > max_bytes:
            reason = OVER_BYTES
        else:
            break
        kept, total = kept - 1, total - size
        planned.append((item_id, reason))
    return planned, kept, total


def newest_records(
    ids: Iterable[str], read: Callable[[str], dict[str, Any]], limit: int, status: str
) -> list[dict[str, Any]]:
    """Up to `limit` records of one status (or ALL), read in the order of `ids` (newest first); an item evicted
    since the listing is skipped, a corrupt one logged and skipped. Every store lists this way."""
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


class ReviewStore:
    """Items under `root`, bounded: at most `max_items`, `max_bytes` of images, none older than `max_age_s`.

    Every write is a rename or an os.replace, so several processes may add, evict, list and label at once; an
    item another process removed meanwhile is simply gone. Sizes count the images (item.json is a few KiB).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_items: int,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_bounds(max_items, max_bytes, max_age_s)
        self.root = Path(root)
        self.max_items, self.max_bytes, self.max_age_s = max_items, max_bytes, max_age_s
        self._clock = clock
        self._items = self.root / ITEMS
        self._staging = self.root / STAGING
        self._sizes: dict[str, int] = {}  # image bytes by id: an image never changes once written
        self._lock = threading.Lock()  # one store may serve several threads (the API's)
        try:
            self._items.mkdir(parents=True, exist_ok=True)
            self._staging.mkdir(exist_ok=True)
        except OSError as exc:
            raise ReviewError(f"cannot create the review store {self.root}: {exc.strerror or exc}") from exc
        self._clean_staging()

    def check_writable(self) -> None:
        """ReviewError unless a file can be written here (a read-only volume passes mkdir when the folders exist)."""
        probe = self._staging / f"probe-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ReviewError(f"cannot write to the review store {self.root}: {exc.strerror or exc}") from exc

    def add(
        self,
        image: bytes,
        *,
        content_type: str,
        device: str,
        frame_id: str,
        received_at: str,
        answer: Mapping[str, Any],
    ) -> Added:
        """Keep one frame, then evict (expired first, then oldest first) until the bounds hold again."""
        if len(image) > self.max_bytes:
            items, size = self.stats()
            return Added(None, refused=TOO_LARGE, items=items, bytes=size)
        now = self._clock()
        for _ in range(3):  # a clash needs the same microsecond and 32 random bits: never twice
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
            )
            if self._publish(item_id, image, document):
                break
        else:
            raise ReviewError("no free review item id after three tries")
        with self._lock:
            self._sizes[item_id] = len(image)
            evicted, items, size = self._enforce(now)
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
        try:
            data = (self._items / item_id / IMAGE_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise UnknownItem(f"no review item {item_id!r}") from exc
        except OSError as exc:
            raise ReviewError(f"review item {item_id}: unreadable image: {exc.strerror or exc}") from exc
        return data, str(record.get("content_type") or "application/octet-stream")

    def dismiss(self, item_id: str) -> dict[str, Any]:
        return self._update(check_item_id(item_id), dismiss_changes(self._clock()))

    def label(self, item_id: str, product: str) -> dict[str, Any]:
        """Record the operator's answer (enrolling labelled items is a later step's work)."""
        changes = label_changes(product, self._clock())
        return self._update(check_item_id(item_id), changes)

    def stats(self) -> tuple[int, int]:
        """Items and image bytes in the store now (every process's)."""
        with self._lock:
            sizes = self._scan()
        return len(sizes), sum(size for _, size in sizes)

    def _publish(self, item_id: str, image: bytes, document: bytes) -> bool:
        """Write the item under staging and rename it into items/; False if that id is taken."""
        staging = self._staging / f"{item_id}.{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            (staging / IMAGE_FILE).write_bytes(image)
            (staging / ITEM_FILE).write_bytes(document)
            os.rename(staging, self._items / item_id)  # a directory onto a non-empty one fails: never overwritten
            return True
        except OSError as exc:
            _delete(staging)  # our own half-written entry
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise ReviewError(f"cannot write a review item to {self.root}: {exc.strerror or exc}") from exc

    def _ids(self) -> builtins.list[str]:
        """Item ids, oldest first; names that are not ids (stray files, editor leftovers) are left alone."""
        try:
            with os.scandir(self._items) as entries:
                return sorted(entry.name for entry in entries if ITEM_ID.match(entry.name))
        except OSError as exc:
            raise ReviewError(f"cannot list the review store {self.root}: {exc.strerror or exc}") from exc

    def _scan(self) -> builtins.list[tuple[str, int]]:
        """(id, image bytes) of every item, oldest first; sizes of items other processes wrote are looked up once."""
        ids = self._ids()
        present = set(ids)
        for gone in [item_id for item_id in self._sizes if item_id not in present]:
            del self._sizes[gone]  # another process evicted it
        sizes = []
        for item_id in ids:
            size = self._sizes.get(item_id)
            if size is None:
                try:
                    size = (self._items / item_id / IMAGE_FILE).stat().st_size
                except FileNotFoundError:
                    if not (self._items / item_id).exists():
                        continue  # evicted between the listing and now
                    size = 0  # an item without its image still takes a place until it is evicted
                self._sizes[item_id] = size
            sizes.append((item_id, size))
        return sizes

    def _enforce(self, now: float) -> tuple[dict[str, int], int, int]:
        """Remove expired items, then the oldest until count and bytes are within bounds; what it removed by reason,
        and the items and bytes left. Called with the lock."""
        planned, kept, total = plan_evictions(
            self._scan(), now, max_items=self.max_items, max_bytes=self.max_bytes, max_age_s=self.max_age_s
        )
        removed: Counter[str] = Counter()
        for item_id, reason in planned:
            if self._remove(item_id):  # not counted when another process removed it first
                removed[reason] += 1
        return dict(removed), kept, total

    def _remove(self, item_id: str) -> bool:
        """Take an item out in one rename, then delete it; False if another process took it first."""
        trash = self._staging / f"{item_id}.evicted-{secrets.token_hex(4)}"
        try:
            os.rename(self._items / item_id, trash)
        except FileNotFoundError:
            self._sizes.pop(item_id, None)
            return False
        except OSError as exc:
            raise ReviewError(f"cannot evict review item {item_id}: {exc.strerror or exc}") from exc
        self._sizes.pop(item_id, None)
        _delete(trash)
        return True

    def _read(self, item_id: str) -> dict[str, Any]:
        try:
            raw = (self._items / item_id / ITEM_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise UnknownItem(f"no review item {item_id!r}") from exc
        except OSError as exc:
            raise ReviewError(f"review item {item_id}: unreadable item.json: {exc.strerror or exc}") from exc
        return parse_item(raw, item_id)

    def _update(self, item_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Rewrite item.json with `changes` in one os.replace (the last of two concurrent writers wins)."""
        record = {**self._read(item_id), **changes}
        folder = self._items / item_id
        temporary = folder / f".{ITEM_FILE}.{secrets.token_hex(4)}.tmp"
        try:
            temporary.write_bytes(json.dumps(record, ensure_ascii=False).encode("utf-8"))
            os.replace(temporary, folder / ITEM_FILE)
        except FileNotFoundError as exc:  # evicted meanwhile (its folder is gone, or moved to be deleted)
            temporary.unlink(missing_ok=True)
            raise UnknownItem(f"no review item {item_id!r}") from exc
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ReviewError(f"cannot update review item {item_id}: {exc.strerror or exc}") from exc
        return record

    def _clean_staging(self) -> None:
        """Remove what processes killed mid-write left in staging (real file times: the clock may be a test's)."""
        stale_before = time.time() - STALE_STAGING_S
        try:
            with os.scandir(self._staging) as entries:
                paths = [Path(entry.path) for entry in entries]
        except OSError as exc:
            logger.warning("cannot look for leftovers in %s: %s", self._staging, exc)
            return
        for path in paths:
            try:
                stale = path.lstat().st_mtime < stale_before
            except FileNotFoundError:  # another process cleaning the same leftovers
                continue
            if stale:
                _delete(path)


def _delete(path: Path) -> None:
    """Delete a file or folder of staging; one that another process deletes first is no error."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass  # another process removed it: what was wanted
    except OSError as exc:
        logger.warning("could not remove %s from the review store: %s", path, exc)
