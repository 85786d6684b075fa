"""The review queue's items, whatever holds them: ids, the item.json document, statuses, labels, and which items the
bounds evict. Pure and stdlib only (the HTTP API imports it); the stores are models/store/review_store.py's.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from broker.contract import rfc3339
from models.errors import ReviewError, UnknownItem

# every store's layout: `items/<id>/image` (the bytes the device sent) and `items/<id>/item.json`
ITEMS, IMAGE_FILE, ITEM_FILE = "items", "image", "item.json"
OCTETS = "application/octet-stream"  # the content type of an image whose own is not known
OPEN, DISMISSED, LABELLED = "open", "dismissed", "labelled"
STATUSES = (OPEN, DISMISSED, LABELLED)
ALL = "all"  # list(status=ALL): every item, whatever its status
# why an item was not kept (TOO_LARGE) or was removed to hold the bounds; the worker counts each by name
TOO_LARGE, EXPIRED, OVER_COUNT, OVER_BYTES = "too_large", "expired", "evicted_count", "evicted_bytes"
MAX_LABEL_CHARS = 128
STALE_STAGING_S = 3600.0  # a half-written item this old belongs to a process killed mid-write
_ID_TIME = "%Y%m%dT%H%M%S%fZ"
# fixed width, so ids sort as their times do; checked on every path that takes an id (no "..", "/", absolute path)
ITEM_ID = re.compile(r"\A[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}\Z")


def new_id(at: float) -> str:
    """Time-sortable and unique across processes: the time to the microsecond and 32 random bits."""
    return f"{_id_time(at)}-{secrets.token_hex(4)}"


def _id_time(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime(_ID_TIME)


def expiry_cutoff(now: float, max_age_s: float) -> str:
    """Ids sort as their times: an id below this one is older than `max_age_s` at `now`."""
    return _id_time(now - max_age_s)


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
    features: Mapping[str, Any] | None = None,
) -> bytes:
    """The item.json of a new item, as UTF-8 JSON; `features` (its space, vector and the version's same-product
    similarity) lets the queue group look-alikes."""
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
    if features is not None:
        record["features"] = dict(features)
    try:
        return encode_record(record)
    except (TypeError, ValueError) as exc:
        raise ReviewError(f"the answer of frame {frame_id} cannot be stored as JSON: {exc}") from exc


def encode_record(record: Mapping[str, Any]) -> bytes:
    """An item's record as its item.json holds it (UTF-8 JSON)."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


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


def label_changes(product: object, now: float, *, enrolled: bool = True) -> dict[str, Any]:
    """What labelling an item changes in its record; ReviewError for a label that is not a product name."""
    if not isinstance(product, str) or not product.strip() or len(product) > MAX_LABEL_CHARS:
        raise ReviewError(f"a label is a product name of 1 to {MAX_LABEL_CHARS} characters, got {product!r}")
    if not product.isprintable():
        raise ReviewError(f"a label must not hold control characters, got {product!r}")
    return {"status": LABELLED, "label": product, "labelled_at": rfc3339(now), "enrolled": enrolled}


def eviction_reason(item_id: str, items: int, total: int, *, cutoff: str, max_items: int, max_bytes: int) -> str | None:
    """Why the oldest item, `item_id`, must go while `items` items of `total` image bytes are kept (None: it stays):
    expired (older than `cutoff`, expiry_cutoff's), then over the count, then over the bytes."""
    if item_id < cutoff:
        return EXPIRED
    if items > max_items:
        return OVER_COUNT
    if total > max_bytes:
        return OVER_BYTES
    return None
