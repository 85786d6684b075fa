"""The products the API knows: the current version's catalog, and records posted before their first photos.

A product posted without photos waits in `<store>/products.json` (replaced atomically under a lock, so two API
processes sharing the store never lose each other's records) until an enrolment carries its record into a model
version. Every rewrite drops the records a version's catalog now carries and those posted more than
`pending_days` ago that no photo ever followed (PARTSIGHT_PENDING_PRODUCT_DAYS), so the file holds what waits, not
everything ever posted; `prune` rewrites it for that alone (the API, at start-up). Stdlib only.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.store.record_shards import read_keyed
from models.store.versions import MANIFEST, current_version

PENDING_FILE = "products.json"
LOCK_FILE = ".products.lock"
DEFAULT_PENDING_DAYS = 30.0  # a record posted and never followed by photos is forgotten after this long


def catalog_of(folder: Path) -> dict[str, dict[str, Any]]:
    """The catalog records of one version, by product (empty when it has none or it cannot be read): its table
    of shards (models.store.record_shards), or catalog.json in a version written before them."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and "catalog" in manifest:
            table = read_keyed(manifest["catalog"], lambda name: folder / name).content
            return {str(p): dict(record) for p, record in table.items() if isinstance(record, dict)}
        document = json.loads((folder / "catalog.json").read_text(encoding="utf-8"))
        records = document["products"] if isinstance(document, dict) else document
        return {str(record["product"]): dict(record) for record in records if isinstance(record, dict)}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):  # MalformedRecords is a ValueError
        return {}


def _posted_at(value: Any, now: float) -> float:
    """When a record was posted: its Unix time, or `now` for one written before times were kept or not a time."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return now


class Products:
    """The current version's catalog (read on each call: `current` moves under us) and the pending records."""

    def __init__(self, store: Path, *, pending_days: float = DEFAULT_PENDING_DAYS, clock: Any = time.time) -> None:
        self.store = store
        self._pending = store / PENDING_FILE
        self._lock = store / LOCK_FILE
        self._keep_s, self._clock = pending_days * 86400.0, clock

    def catalog(self) -> dict[str, dict[str, Any]]:
        version = current_version(self.store)
        return catalog_of(self.store / version) if version else {}

    def pending(self) -> dict[str, dict[str, Any]]:
        """The records posted and still waiting for photos (those that waited too long are gone already)."""
        pending, posted = self._read()
        oldest = self._clock() - self._keep_s
        return {product: record for product, record in pending.items() if posted[product] >= oldest}

    def _read(self) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
        """The pending records by product, and when each was posted (Unix time; now for a record written before)."""
        try:
            document = json.loads(self._pending.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):  # none yet, or unreadable: nothing waits
            return {}, {}
        records = document.get("products", []) if isinstance(document, dict) else []
        posted = document.get("posted_at", {}) if isinstance(document, dict) else {}
        pending = {
            str(record["product"]): record
            for record in (records if isinstance(records, list) else [])
            if isinstance(record, dict) and "product" in record
        }
        now = self._clock()
        return pending, {p: _posted_at(posted.get(p) if isinstance(posted, dict) else None, now) for p in pending}

    def listing(self) -> list[dict[str, Any]]:
        """Every product: the catalog's (enrolled) and the pending ones not in it (enrolled false), by id."""
        catalog = self.catalog()
        known = [{**record, "enrolled": True} for record in catalog.values()]
        waiting = [
            {**record, "enrolled": False} for product, record in self.pending().items() if product not in catalog
        ]
        return sorted([*known, *waiting], key=lambda record: str(record["product"]))

    def get(self, product: str) -> dict[str, Any] | None:
        """A product's record with `enrolled`, or None when neither the catalog nor the pending records hold it."""
        record = self.catalog().get(product)
        if record is not None:
            return {**record, "enrolled": True}
        waiting = self.pending().get(product)
        return {**waiting, "enrolled": False} if waiting is not None else None

    def record_for_enrolment(self, product: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, record): a catalog product enrols without a record, a pending one with its record; (False, None)
        for a product nobody posted."""
        if product in self.catalog():
            return True, None
        record = self.pending().get(product)
        return (record is not None), record

    def add_pending(self, record: dict[str, Any]) -> bool:
        """Keep a checked record until its first enrolment; True when it is new, False when it replaced one."""
        with self._locked():
            pending, posted = self._read()
            replaced = record["product"] in pending
            pending[str(record["product"])] = record
            posted[str(record["product"])] = self._clock()
            self._write(pending, posted)
        return not replaced

    def remove_pending(self, product: str) -> bool:
        """Forget a record posted and never enrolled; False when none waits under that id."""
        with self._locked():
            pending, posted = self._read()
            if pending.pop(product, None) is None:
                return False
            self._write(pending, posted)
        return True

    def prune(self) -> int:
        """Rewrite the file without the records the catalog carries and those that waited too long, when it holds
        any (read first without the lock: a store nothing is to be dropped from is not written); how many were
        dropped."""
        pending, posted = self._read()
        if len(self._kept(pending, posted)) == len(pending):
            return 0
        with self._locked():
            pending, posted = self._read()
            kept = self._kept(pending, posted)
            if len(kept) == len(pending):  # another process pruned it meanwhile
                return 0
            self._write(pending, posted, kept)
        return len(pending) - len(kept)

    def _kept(self, pending: dict[str, dict[str, Any]], posted: dict[str, float]) -> list[str]:
        """The products still waiting: not in the catalog, and posted within `pending_days`."""
        catalog, oldest = self.catalog(), self._clock() - self._keep_s
        return sorted(p for p in pending if p not in catalog and posted.get(p, oldest) >= oldest)

    def _write(
        self, pending: dict[str, dict[str, Any]], posted: dict[str, float], kept: list[str] | None = None
    ) -> None:
        """Rewrite the file with the `kept` products (default: without the records the catalog now carries and
        those that waited too long)."""
        kept = self._kept(pending, posted) if kept is None else kept
        document = {"products": [pending[p] for p in kept], "posted_at": {p: posted[p] for p in kept}}
        staging = self._pending.with_name(f".{PENDING_FILE}.{secrets.token_hex(4)}.tmp")
        try:
            staging.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(staging, self._pending)
        finally:
            staging.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
