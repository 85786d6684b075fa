"""The review store in one directory that several worker processes share (models.store.review_store.ReviewStore).

Layout: `<root>/items/<id>/image` and `<root>/items/<id>/item.json`; an item is written under `<root>/.staging/`
and appears in one rename, so no reader ever sees half of one. Stdlib only: the HTTP API imports it too.
"""

from __future__ import annotations

import builtins  # the store's own `list` method shadows the builtin in its annotations
import errno
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from models.errors import ReviewError, UnknownItem
from models.store.review_items import IMAGE_FILE, ITEM_FILE, ITEM_ID, ITEMS, STALE_STAGING_S
from models.store.review_store import ReviewStore

logger = logging.getLogger(__name__)

STAGING = ".staging"


class DirectoryReviewStore(ReviewStore):
    """Items under `root`. Every write is a rename or an os.replace, so several processes may add, evict, list and
    label at once."""

    def __init__(
        self,
        root: Path,
        *,
        max_items: int,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(max_items=max_items, max_bytes=max_bytes, max_age_s=max_age_s, clock=clock)
        self.root = Path(root)
        self._items = self.root / ITEMS
        self._staging = self.root / STAGING
        self._sizes: dict[str, int] = {}  # image bytes by id: an image never changes once written
        # items/'s stat when this store last listed it: a rename in or out moves its mtime, and its link count (one per
        # item's folder) where the filesystem keeps one; mtime alone can miss a rename in the same clock tick
        self._seen_stat: tuple[int, int] = (-1, -1)
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

    def _write_item(self, item_id: str, image: bytes, document: bytes, content_type: str) -> bool:
        """Write the item under staging and rename it into items/; False if that id is taken."""
        staging = self._staging / f"{item_id}.{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            (staging / IMAGE_FILE).write_bytes(image)
            (staging / ITEM_FILE).write_bytes(document)
            before = self._items_stat()
            os.rename(staging, self._items / item_id)  # a directory onto a non-empty one fails: never overwritten
            after = self._items_stat()
        except OSError as exc:
            _delete(staging)  # our own half-written entry
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise ReviewError(f"cannot write a review item to {self.root}: {exc.strerror or exc}") from exc
        with self._lock:
            self._sizes[item_id] = len(image)
            self._note_own_rename(before, after, 1)
        return True

    def _items_stat(self) -> tuple[int, int]:
        try:
            status = self._items.stat()
        except OSError:
            return (-1, -1)
        return status.st_mtime_ns, status.st_nlink

    def _note_own_rename(self, before: tuple[int, int], after: tuple[int, int], links: int) -> None:
        """Our own rename of one item into (`links` 1) or out of (-1) items/ is not another writer's change: `after`
        is what this store has seen, when `before` was and the link count moved by that one folder alone. Where the
        filesystem keeps no link count (1), a rename another writer made in between is taken for ours until
        RESCAN_S. (Taking the stat after our rename whatever it held let a store take the other store's new items
        for its own and pass the bound by more than one item a writer.) Called with the lock."""
        if before == self._seen_stat and (before[1] <= 1 or after[1] == before[1] + links):
            self._seen_stat = after

    def _changed_elsewhere(self) -> bool:
        return self._items_stat() != self._seen_stat

    def _seen(self) -> None:
        self._seen_stat = self._items_stat()

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

    def _remove(self, item_id: str) -> bool:
        """Take an item out in one rename, then delete it; False if another process took it first."""
        trash = self._staging / f"{item_id}.evicted-{secrets.token_hex(4)}"
        before = self._items_stat()
        try:
            os.rename(self._items / item_id, trash)
            self._note_own_rename(before, self._items_stat(), -1)
        except FileNotFoundError:
            self._sizes.pop(item_id, None)
            return False
        except OSError as exc:
            raise ReviewError(f"cannot evict review item {item_id}: {exc.strerror or exc}") from exc
        self._sizes.pop(item_id, None)
        _delete(trash)
        return True

    def _read_file(self, item_id: str, name: str) -> bytes:
        try:
            return (self._items / item_id / name).read_bytes()
        except FileNotFoundError as exc:
            raise UnknownItem(f"no review item {item_id!r}") from exc
        except OSError as exc:
            raise ReviewError(f"review item {item_id}: unreadable {name}: {exc.strerror or exc}") from exc

    def _replace(self, item_id: str, document: bytes) -> None:
        """Rewrite item.json in one os.replace (the last of two concurrent writers wins)."""
        folder = self._items / item_id
        temporary = folder / f".{ITEM_FILE}.{secrets.token_hex(4)}.tmp"
        try:
            temporary.write_bytes(document)
            os.replace(temporary, folder / ITEM_FILE)
        except FileNotFoundError as exc:  # evicted meanwhile (its folder is gone, or moved to be deleted)
            temporary.unlink(missing_ok=True)
            raise UnknownItem(f"no review item {item_id!r}") from exc
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ReviewError(f"cannot update review item {item_id}: {exc.strerror or exc}") from exc

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
