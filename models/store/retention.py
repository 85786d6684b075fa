"""Which versions a store keeps, and pruning the rest: a store that enrols all day does not fill its disk.

Kept: the newest `keep` versions (PARTSIGHT_KEEP_VERSIONS, default 20), `current`, the version that was current
before it (`previous`, moved by versions.point_current), every pinned version (`partsight models --pin V`,
listed in `pins.json`), and the full training each of current, previous and the pinned ones descends from
(its manifest's `choices.trained_version`): an operator can always roll back to them. A prune removes every
other version folder (but one whose manifest it cannot read: a newer format, or damage, for an operator to look
at), staging folders a writer left behind more than an hour ago, and
the content blobs no version links any more (models.store.blobs).

Standard library only, like models.store.versions: the API and the command line prune without numpy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.settings import env_int
from models.errors import ArtifactError
from models.store import blobs
from models.store.versions import (
    PREVIOUS,
    current_version,
    previous_version,
    read_manifest,
    store_lock,
    version_dir,
    version_folders,
)

logger = logging.getLogger(__name__)

DEFAULT_KEEP_VERSIONS = 20
PINS_FILE = "pins.json"
STAGING_PREFIX = ".staging-"
STALE_STAGING_S = 3600.0  # a staging folder this old belongs to a writer that died


@dataclass(frozen=True)
class Pruned:
    """What a prune removed, and what it kept (and why each was kept: newest, current, previous, pinned, base)."""

    removed: tuple[str, ...]
    kept: dict[str, tuple[str, ...]]
    freed_bytes: int


def keep_from_env(env: Mapping[str, str]) -> int:
    """PARTSIGHT_KEEP_VERSIONS: the newest versions every prune keeps (beside current, previous, pinned, bases)."""
    return env_int(env, "PARTSIGHT_KEEP_VERSIONS", DEFAULT_KEEP_VERSIONS, minimum=1)


def pinned_versions(store: Path) -> list[str]:
    """The versions pinned in `store` (kept by every prune), in the order they were pinned."""
    try:
        document = json.loads((store / PINS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{store / PINS_FILE}: unreadable ({exc}); fix or remove it") from exc
    pinned = document.get("pinned") if isinstance(document, dict) else None
    if not isinstance(pinned, list) or not all(isinstance(name, str) for name in pinned):
        raise ArtifactError(f"{store / PINS_FILE}: `pinned` is not a list of version names; fix or remove it")
    return list(pinned)


def pin(store: Path, version: str, *, timeout_s: float) -> bool:
    """Pin `version` (models.errors.UnknownVersion when it is not one); False when it was pinned already."""
    version_dir(store, version)
    with store_lock(store, timeout_s=timeout_s):
        pinned = pinned_versions(store)
        if version in pinned:
            return False
        _write_pins(store, [*pinned, version])
    return True


def unpin(store: Path, version: str, *, timeout_s: float) -> bool:
    """Unpin `version`; False when it was not pinned. The next prune may remove it."""
    with store_lock(store, timeout_s=timeout_s):
        pinned = pinned_versions(store)
        if version not in pinned:
            return False
        _write_pins(store, [name for name in pinned if name != version])
    return True


def _write_pins(store: Path, pinned: list[str]) -> None:
    staging = store / f".{PINS_FILE}.{os.getpid()}.tmp"
    staging.write_text(json.dumps({"pinned": pinned}, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, store / PINS_FILE)


def kept_versions(store: Path, keep: int, folders: list[Path] | None = None) -> dict[str, tuple[str, ...]]:
    """Each version a prune keeps, with the reasons it is kept. Pure reading; no lock."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    names = [folder.name for folder in (version_folders(store) if folders is None else folders)]
    reasons: dict[str, list[str]] = {}

    def mark(names_kept: Iterable[str | None], reason: str) -> None:
        for name in names_kept:
            if name is not None and name in existing and reason not in reasons.get(name, ()):
                reasons.setdefault(name, []).append(reason)

    existing = set(names)
    mark(sorted(names, key=lambda name: (_created_at(store / name), name))[-keep:], "newest")
    current, previous, pinned = current_version(store), previous_version(store), pinned_versions(store)
    mark([current], "current")
    mark([previous], PREVIOUS)
    mark(pinned, "pinned")
    mark((_trained_from(store / name) for name in (current, previous, *pinned) if name in existing), "base")
    mark((name for name in names if _unreadable(store / name)), "unreadable")
    return {name: tuple(why) for name, why in reasons.items()}


def _unreadable(folder: Path) -> bool:
    """A version whose manifest this release cannot read (a newer format, or damage): never removed by a prune."""
    try:
        read_manifest(folder)
    except ArtifactError:
        return True
    return False


def _created_at(folder: Path) -> str:
    try:
        created = read_manifest(folder).get("created_at")
    except ArtifactError:
        return ""  # an unreadable version sorts oldest: pruned before any readable one
    return created if isinstance(created, str) else ""


def _trained_from(folder: Path) -> str | None:
    try:
        choices = read_manifest(folder).get("choices")
    except ArtifactError:
        return None
    trained = choices.get("trained_version") if isinstance(choices, dict) else None
    return trained if isinstance(trained, str) and trained else None


def prune(store: Path, keep: int = DEFAULT_KEEP_VERSIONS, *, timeout_s: float = 60.0, locked: bool = False) -> Pruned:
    """Remove every version `kept_versions` does not keep, stale staging folders and unreferenced blobs, under the
    store's lock (never beside an enrolment or an activation) unless the caller holds it (`locked`)."""
    if locked:
        return _prune_locked(store, keep)
    with store_lock(store, timeout_s=timeout_s):
        return _prune_locked(store, keep)


def _prune_locked(store: Path, keep: int) -> Pruned:
    folders = version_folders(store)  # one listing: a version written after it is not looked at
    kept = kept_versions(store, keep, folders)
    removed = []
    now = time.time()
    for folder in folders:
        if folder.name not in kept:
            shutil.rmtree(folder)
            removed.append(folder.name)
    for entry in store.iterdir():
        with contextlib.suppress(FileNotFoundError):  # a writer renamed its staging folder into place meanwhile
            if entry.name.startswith(STAGING_PREFIX) and now - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
    freed = blobs.collect_garbage(store)
    if removed:
        logger.info("pruned %d version(s) of %s, %d bytes of blobs freed: %s", len(removed), store, freed, removed)
    return Pruned(tuple(removed), kept, freed)
