"""The versions of a model store as files: list them, verify their sha256 against the manifest, move `current`.

Standard library only (manifests read as JSON, files hashed with hashlib), so the HTTP API lists and activates
versions without numpy. `list_versions` and `activate` are the one way both `partsight models` and the API do it;
models.bundle loads what these functions verified and moves `current` through them.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ArtifactError, StoreBusy, UnknownVersion
from models.store.writer_lock import HeldLock, RedisStoreLocks

DEFAULT_STORE = "models-store"  # PARTSIGHT_MODEL_DIR when unset, for the worker and the API alike
MANIFEST = "manifest.json"
CURRENT = "current"
PREVIOUS = "previous"  # the version that was current before it: kept by every prune
READABLE_FORMATS = (1, 2, 3, 4, 5, 6)
REQUIRED_FILES = ("head.npz", "labels.json", "catalog.json")  # labels and catalog: unless stored as tables
# a version is one folder name under the store: never "..", a "/", or a hidden staging folder
VERSION_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_CHUNK = 1 << 20


# within one hashing_once() scope (a load, an enrolment: seconds), each file's sha256 by its inode, size and
# modification time: a version's files are hard links to blobs (models.store.blobs), so a load that verifies every
# file and then reads each, and a write that lists the sha256 of the files it linked from the version it loaded,
# read each blob once, not three times (at 1,000 products, 170 MB of shards an enrolment no longer reads twice)
_HASHED: contextvars.ContextVar[dict[tuple[int, int, int, int], str] | None] = contextvars.ContextVar(
    "files_hashed", default=None
)


def current_hashes() -> dict[tuple[int, int, int, int], str] | None:
    """The sha256 the hashing_once() scope this code runs in knows, by file identity (None outside one): what a
    caller may carry into a later scope."""
    return _HASHED.get()


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """What a file read once is trusted to be unchanged by: its device, inode, size and modification time."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def file_sha256(path: Path) -> str:
    memo = _HASHED.get()
    key = None
    if memo is not None:
        key = file_identity(path)
        if key in memo:
            return memo[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    if memo is not None and key is not None:
        memo[key] = digest.hexdigest()
    return digest.hexdigest()


@contextlib.contextmanager
def hashing_once(carried: dict[tuple[int, int, int, int], str] | None = None) -> Iterator[None]:
    """A scope in which a file read whole for its sha256 is not read again while its inode, size and modification
    time stay the same (a scope inside another shares the outer's). Outside any scope every call reads the file.
    `carried`: the sha256 an earlier scope knew (current_hashes), trusted here as there (an enrolment building on the
    version the one before it wrote, in the same process: models.train.carried_scope)."""
    if _HASHED.get() is not None:
        yield
        return
    token = _HASHED.set({} if carried is None else carried)
    try:
        yield
    finally:
        _HASHED.reset(token)


def resolve(path: Path) -> Path:
    """A version directory as it is, or the version a store's `current` points at."""
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT
    if current.exists():
        target = current.resolve() if current.is_symlink() else path / current.read_text().strip()
        if (target / MANIFEST).is_file():
            return target
    raise ArtifactError(f"{path} is neither a model version (no {MANIFEST}) nor a store with a '{CURRENT}' version")


def current_version(store: Path) -> str | None:
    """The name of the version `current` points at, or None when the store has none yet."""
    try:
        return resolve(store).name if (store / CURRENT).exists() else None
    except (ArtifactError, OSError):
        return None


def previous_version(store: Path) -> str | None:
    """The version that was current before the current one (None when there was none, or it is gone)."""
    try:
        name = os.readlink(store / PREVIOUS)
    except OSError:
        return None
    return name if VERSION_NAME.match(name) and (store / name / MANIFEST).is_file() else None


def version_dir(store: Path, version: object) -> Path:
    """The folder of `version` in `store`; UnknownVersion for a name that is not a version there (never a path)."""
    if not isinstance(version, str) or not VERSION_NAME.match(version) or version in {CURRENT, PREVIOUS}:
        raise UnknownVersion(f"{store} has no version {str(version)[:80]!r}")
    folder = store / version
    if not (folder / MANIFEST).is_file():
        raise UnknownVersion(f"{store} has no version {version!r}")
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    """A version's manifest as JSON, checked to be an object of a readable format."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{folder}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{folder}: manifest format {found!r} is not one of {READABLE_FORMATS}")
    return manifest


def verify_file(folder: Path, manifest: Mapping[str, Any], name: str) -> Path:
    """The path of `name` in `folder` once its sha256 matches the manifest's; ArtifactError otherwise."""
    files = manifest.get("files")
    entry = files.get(name) if isinstance(files, Mapping) else None
    if not isinstance(entry, Mapping) or "sha256" not in entry:
        raise ArtifactError(f"{folder}: the manifest does not list {name}")
    target = folder / name
    if not target.is_file():
        raise ArtifactError(f"{folder}: {name} is missing")
    actual = file_sha256(target)
    if actual != entry["sha256"]:
        raise ArtifactError(f"{folder}: {name} has sha256 {actual}, the manifest says {entry['sha256']}")
    return target


def verify_version(folder: Path) -> dict[str, Any]:
    """Every file the manifest lists, and the files a head needs, match their sha256; returns the manifest."""
    manifest = read_manifest(folder)
    files = manifest.get("files")
    if not isinstance(files, Mapping):
        raise ArtifactError(f"{folder}: the manifest lists no files")
    for name in files:
        if not isinstance(name, str) or "/" in name or name in {"", ".", ".."}:
            raise ArtifactError(f"{folder}: the manifest lists {str(name)[:80]!r}, which is not a file name")
        verify_file(folder, manifest, name)
    for name in required_files(manifest):
        verify_file(folder, manifest, name)
    return manifest


def required_files(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The files a head needs: head.npz, and labels.json and catalog.json where the version keeps them as files
    (from format 5 they are tables of shards the manifest names: models.store.record_shards)."""
    tables = {"labels.json": "labels", "catalog.json": "catalog"}
    return tuple(name for name in REQUIRED_FILES if tables.get(name) not in manifest)


def point_current(store: Path, version: str) -> None:
    """Point the store's `current` at `version` in one rename: a worker watching it sees the old or the new; the
    version it pointed at before becomes `previous` (kept by every prune). Under a Redis writer lock, the lock is
    checked first: a writer that lost it makes nothing current (StoreBusy)."""
    held = _HELD.get()
    if held is not None:
        held.check()
    was = current_version(store)
    _replace_link(store, CURRENT, version)
    if was is not None and was != version:
        _replace_link(store, PREVIOUS, was)


def _replace_link(store: Path, name: str, version: str) -> None:
    link = store / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # two writers never share a name
    link.symlink_to(version)
    try:
        os.replace(link, store / name)
    except OSError:
        link.unlink(missing_ok=True)
        raise


def version_folders(store: Path) -> list[Path]:
    """The folders of a store that hold a manifest, by name (hidden staging folders left out)."""
    return sorted(
        entry
        for entry in store.iterdir()
        if entry.is_dir()
        and VERSION_NAME.match(entry.name)
        and entry.name not in {CURRENT, PREVIOUS}
        and (entry / MANIFEST).is_file()
    )


LOCK_FILE = ".store.lock"
LOCK_TIMEOUT_S = 600.0
_redis_locks: RedisStoreLocks | None = None  # set once at start-up by a process that knows Redis
_HELD: contextvars.ContextVar[HeldLock | None] = contextvars.ContextVar("store_writer_lock", default=None)


def use_redis_lock(locks: RedisStoreLocks | None) -> None:
    """From now on, every store_lock of this process also takes the store's lock in Redis (None: flock alone).
    Called once at start-up by the worker, the API and the command line when they know Redis."""
    global _redis_locks  # noqa: PLW0603  # a process-wide setting, like the thread pools' limits
    _redis_locks = locks


@contextlib.contextmanager
def store_lock(store: Path, timeout_s: float = LOCK_TIMEOUT_S, *, part: str = "") -> Iterator[None]:
    """One writer of `current` at a time on `store` (an enrolment, an activation): the folder's flock (processes
    of one machine), and the store's lock in Redis where this process knows Redis (machines sharing the folder
    over a network, where flock is not to be trusted: models.store.writer_lock). StoreBusy after `timeout_s`.
    `part`: a part of the store written apart from its versions (its lines), under a lock of its own."""
    started = time.monotonic()
    with _flock(store, timeout_s, f".{part}.lock" if part else LOCK_FILE):
        locks = _redis_locks
        if locks is None:
            yield
            return
        remaining = max(0.0, timeout_s - (time.monotonic() - started))
        with locks.hold(store, timeout_s=remaining, part=part) as held:
            token = _HELD.set(held) if not part else None
            try:
                yield
            finally:
                if token is not None:
                    _HELD.reset(token)


@contextlib.contextmanager
def _flock(store: Path, timeout_s: float, name: str = LOCK_FILE) -> Iterator[None]:
    path = store / name
    handle = path.open("a+")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise StoreBusy(f"{path} was held for more than {timeout_s:.0f} s: try again later") from exc
                time.sleep(0.05)
        yield
    finally:
        handle.close()


@dataclass(frozen=True)
class VersionEntry:
    """One version of a store, as `partsight models` and GET /v1/models list it."""

    version: str
    manifest: Mapping[str, Any]  # empty when it cannot be read (then `problem` says why)
    current: bool
    problem: str | None  # None: readable (and, when listed with verify, every file matches the manifest)

    @property
    def name(self) -> str | None:
        name = self.manifest.get("name")
        return name if isinstance(name, str) else None

    @property
    def created_at(self) -> str | None:
        created = self.manifest.get("created_at")
        return created if isinstance(created, str) else None


def list_versions(store: Path, *, verify: bool = False) -> list[VersionEntry]:
    """Every version of `store`, newest first; with `verify`, each file hashed against its manifest too (as
    `activate` checks it; slow for big versions, so the API lists without and verifies on activation)."""
    current = current_version(store)
    entries = []
    for folder in version_folders(store):
        try:
            manifest, problem = (verify_version if verify else read_manifest)(folder), None
        except ArtifactError as exc:
            manifest, problem = {}, str(exc)
        entries.append(VersionEntry(folder.name, manifest, folder.name == current, problem))
    entries.sort(key=lambda entry: (entry.created_at or "", entry.version), reverse=True)
    return entries


def activate(store: Path, version: str, *, timeout_s: float) -> str | None:
    """Point `current` at `version` once every file of it matches its manifest (a roll-back or a roll-forward),
    under the store's lock (never in the middle of an enrolment); returns the version that was current.

    UnknownVersion when `version` is not a version of `store`, ArtifactError when it fails verification (`current`
    untouched),
    StoreBusy when the lock is held longer than `timeout_s`."""
    folder = version_dir(store, version)
    verify_version(folder)
    with store_lock(store, timeout_s=timeout_s):
        version_dir(store, version)  # still there: a prune may have run between the check and the lock
        previous = current_version(store)
        point_current(store, version)
    return previous
