"""Content-addressed files shared between a store's versions: a version's file whose bytes another version already
holds costs no bytes on disk.

Every file of a version (its manifest aside) is a hard link to `<store>/.blobs/<sha256[:2]>/<sha256>`. A writer
links each file of its staging folder to the blob of the same sha256 when there is one, and adds it as a blob when
there is none; the version folder still holds ordinary files, verified against its manifest as before, and readers
never look in `.blobs`. A prune removes the blobs no version links any more (link count 1). On a filesystem
without hard links, versions keep their own copies (nothing shared, nothing lost).

A blob is never written to in place: a new version's file is a new file, linked. Removing a version only drops
its links. A prune racing a writer that is linking a blob at most loses that blob's sharing, never bytes: the
writer's own link keeps them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.store.versions import file_sha256

logger = logging.getLogger(__name__)

BLOBS = ".blobs"
# no hard links here, or no right to the blobs (a worker running as another user than the training): no sharing
_NOT_SHAREABLE = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def blob_path(store: Path, sha256: str) -> Path:
    return store / BLOBS / sha256[:2] / sha256


def share(store: Path, staging: Path, files: Mapping[str, Mapping[str, Any]]) -> int:
    """Make each of `files` (name -> its manifest record, with sha256 and bytes) in `staging` a link to its blob;
    returns the bytes this saved (the files whose blob existed). A filesystem without hard links shares nothing."""
    saved = 0
    for name, record in files.items():
        path, blob = staging / name, blob_path(store, str(record["sha256"]))
        try:
            saved += _link_one(path, blob, str(record["sha256"]))
        except OSError as exc:  # sharing saves bytes; it never fails a version: this file stays its own copy
            if exc.errno in _NOT_SHAREABLE:
                logger.info("the store %s cannot share files (%s): versions keep their own copies", store, exc)
                return saved
            logger.warning("%s kept as its own copy: its blob could not be linked (%s)", path, exc)
    return saved


def _link_one(path: Path, blob: Path, sha256: str) -> int:
    try:
        if path.samefile(blob):
            return 0
        if file_sha256(blob) == sha256:  # read, never trusted: a blob changed on disk is not spread further
            swap = path.with_name(f".{path.name}.link")
            os.link(blob, swap)
            os.replace(swap, path)
            return path.stat().st_size
        logger.warning("blob %s does not match its name: replaced by a good copy", blob)
        blob.unlink()
    except FileNotFoundError:  # no blob yet, or a prune removed it just now: this file becomes the blob
        pass
    blob.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another writer added it just now: ours stays a private copy
        os.link(path, blob)
    return 0


def collect_garbage(store: Path) -> int:
    """Remove the blobs no version links any more; returns the bytes freed."""
    root = store / BLOBS
    if not root.is_dir():
        return 0
    freed = 0
    for folder in root.iterdir():
        for blob in folder.iterdir() if folder.is_dir() else ():
            stat = blob.stat()
            if stat.st_nlink == 1:
                blob.unlink(missing_ok=True)
                freed += stat.st_size
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return freed


def store_bytes(store: Path) -> int:
    """The bytes a store's files take on disk, each shared file counted once (the store's growth is measured so)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, names in os.walk(store):
        for name in names:
            stat = os.lstat(os.path.join(folder, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total
