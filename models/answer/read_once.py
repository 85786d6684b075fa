"""Within one scope (a load, an enrolment: seconds), what is read from a version's files once: an .npz's arrays
(models.answer.arrays) and a table of rows in shards (models.answer.row_shards), by each file's device, inode, size
and modification time. A version's files are hard links to content-named blobs (models.store.blobs), so an
enrolment's verification of the version it wrote takes the gallery's rows it read from the version it built on
instead of decoding and joining 76 MB again at 1,000 parts. The files are still verified by their sha256 each time
(models.store.versions.hashing_once keeps those in the same way). Arrays a scope holds are read-only: every read of
the scope shares them."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Memos = dict[str, dict[Any, Any]]
_MEMOS: contextvars.ContextVar[Memos | None] = contextvars.ContextVar("read_once", default=None)


def identity(path: Path) -> tuple[int, int, int, int]:
    """What a file read once is trusted to be unchanged by (as models.store.versions.file_identity)."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def memo(kind: str) -> dict[Any, Any] | None:
    """The scope's dict of `kind` ("arrays", "rows", "rows_written": the tables it wrote, "graphs": photo indexes,
    models.answer.gallery_rows), keyed by file identities; None outside a scope."""
    memos = _MEMOS.get()
    return None if memos is None else memos.setdefault(kind, {})


def current_reads() -> Memos | None:
    """What the scope this code runs in has read (None outside one): what a caller may carry into a later scope."""
    return _MEMOS.get()


@contextlib.contextmanager
def reading_once(carried: Memos | None = None) -> Iterator[None]:
    """A scope in which a file is decoded once (a scope inside another shares the outer's). `carried`: what an
    earlier scope read (current_reads), trusted here as there (models.train.carried_scope)."""
    if _MEMOS.get() is not None:
        yield
        return
    token = _MEMOS.set({} if carried is None else carried)
    try:
        yield
    finally:
        _MEMOS.reset(token)
