"""Rows of arrays kept as content-named shards and a mask of the rows in use, so that a version that adds a few
rows to the version it builds on writes bytes in proportion to what it adds, not to the catalog.

A version's rows (the enrolment base's training rows, the gallery's photos) are the rows of its shards, in order,
less the rows its mask drops. A shard is an .npz named by its content (`<prefix>-<sha256[:16]>.npz`); the next
version links the shards it keeps (models.store.blobs makes a shared file cost no bytes) and writes one shard of
its own new rows and, when it drops rows, the mask (one bit per row). Past SHARD_LIMIT shards a version keeps the
first shard (a training's rows: most of them) and writes the rows after it as one shard (what 63 enrolments added,
not the catalog: at 10,000 parts the first shard is 213 MB); when the mask drops more than half the rows, or the
shards' sizes are not known (rows not read from them), it writes its rows in use as one shard again. Every shard
and mask is a file of the version, hashed in its manifest and verified on load like every other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.arrays import read_arrays, save_arrays
from models.answer.read_once import identity, memo
from models.answer.row_buffers import appended
from models.errors import InvalidModel

SHARD_LIMIT = 64
MASK_SUFFIX = "-mask.npz"


@dataclass(frozen=True)
class RowLayout:
    """How a version stores one table of rows: its shards in order, their rows together, and its mask file."""

    shards: tuple[str, ...]
    rows: int
    mask: str | None = None  # None: every row of the shards is in use
    shard_rows: tuple[int, ...] = ()  # each shard's rows where known (read or written here; not in the record)

    def record(self) -> dict[str, Any]:
        return {"shards": list(self.shards), "stored_rows": self.rows, "mask": self.mask}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RowLayout:
        try:
            shards = record["shards"]
            if not isinstance(shards, list) or not all(isinstance(name, str) and "/" not in name for name in shards):
                raise InvalidModel("its shards are not a list of file names")
            mask = record.get("mask")
            return cls(tuple(shards), int(record["stored_rows"]), None if mask is None else str(mask))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidModel(f"a malformed record of sharded rows ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class StoredRows:
    """Every row of a version's shards (`columns`), which of them are in use, and how they were stored (None: not
    yet stored, or stored before shards)."""

    columns: dict[str, np.ndarray]
    in_use: np.ndarray  # (rows,) bool
    layout: RowLayout | None = None

    def __post_init__(self) -> None:
        if any(len(column) != len(self.in_use) for column in self.columns.values()):
            raise InvalidModel("sharded rows: every column needs one value per row, and the mask one bit per row")

    def used(self) -> dict[str, np.ndarray]:
        """The rows in use: the columns themselves when every row is (not copied: 150 MB of features at 1,000 parts
        x 20 photos), else a copy of those rows."""
        if self.in_use.all():
            return dict(self.columns)
        return {name: column[self.in_use] for name, column in self.columns.items()}

    def used_where(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Of every stored row, those in use that `rows` (one flag per stored row) marks: a few rows of a large
        table read without copying the rest."""
        chosen = self.in_use & np.asarray(rows, dtype=bool)
        return {name: column[chosen] for name, column in self.columns.items()}

    def grown(self, added: Mapping[str, np.ndarray]) -> StoredRows:
        """These rows and `added` after them, in use (the layout still names the shards the old rows are in). The
        columns grow in place where they can (models.answer.row_buffers): the next version's rows are not a copy of
        every row."""
        count = len(next(iter(added.values())))
        columns = {name: appended(column, np.asarray(added[name])) for name, column in self.columns.items()}
        return StoredRows(columns, np.concatenate([self.in_use, np.ones(count, dtype=bool)]), self.layout)

    def keeping(self, mask_of_used: np.ndarray) -> StoredRows:
        """Of the rows in use, only those `mask_of_used` marks."""
        in_use = self.in_use.copy()
        in_use[in_use] = np.asarray(mask_of_used, dtype=bool)
        return StoredRows(self.columns, in_use, self.layout)


def read_rows(layout: RowLayout, path_of: Any, required: Sequence[str]) -> StoredRows:
    """The rows `layout` names; `path_of(name)` returns a verified file's path (ArtifactError otherwise). Within a
    read_once.reading_once() scope, rows whose shards and mask this scope read or wrote already (by their files'
    identities) are given as they were, every file still verified."""
    paths = [path_of(name) for name in layout.shards]
    mask_path = None if layout.mask is None else path_of(layout.mask)
    tables = memo("rows")
    key = _rows_key(paths, mask_path) if tables is not None else None
    known = tables.get(key) if tables is not None and key is not None else None
    if isinstance(known, StoredRows) and len(known.in_use) == layout.rows and set(required) <= set(known.columns):
        return StoredRows({name: known.columns[name] for name in required}, known.in_use, known.layout)
    rows = _read_rows(layout, paths, mask_path, required)
    if tables is not None and key is not None:
        tables[key] = _read_only(rows)
    return rows


def _decoded_once(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    """A shard's arrays decoded here, not kept by the scope's arrays memo: the table they are joined into is."""
    return read_arrays(path, required, shared=False)


def _read_rows(layout: RowLayout, paths: list[Path], mask_path: Path | None, required: Sequence[str]) -> StoredRows:
    parts = [_decoded_once(path, required) for path in paths]
    columns = {name: _joined([part[name] for part in parts]) for name in required}
    if any(len(column) != layout.rows for column in columns.values()):
        raise InvalidModel(f"the shards hold rows other than the {layout.rows} their record says")
    layout = replace(layout, shard_rows=tuple(len(part[required[0]]) for part in parts) if required else ())
    in_use = np.ones(layout.rows, dtype=bool)
    if layout.mask is not None and mask_path is not None:
        packed = _decoded_once(mask_path, ("in_use",))["in_use"]
        if packed.dtype != np.uint8 or len(packed) != (layout.rows + 7) // 8:
            raise InvalidModel(f"{layout.mask}: not a mask of {layout.rows} rows")
        in_use = np.unpackbits(packed, count=layout.rows).astype(bool)
    return StoredRows(columns, in_use, layout)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The shards' column as one array: one shard's as it is (not copied), none as an empty one."""
    if not parts:
        return np.zeros(0)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _rows_key(paths: Sequence[Path], mask: Path | None) -> tuple[Any, ...] | None:
    """The identities of a table's files (read_once.identity), as a scope remembers its rows by; None for a file that
    cannot be looked at (it is read, and fails, as without a scope)."""
    try:
        return tuple(identity(path) for path in paths), None if mask is None else identity(mask)
    except OSError:
        return None


def _read_only(rows: StoredRows) -> StoredRows:
    for array in (*rows.columns.values(), rows.in_use):
        array.flags.writeable = False  # shared by every read of the scope: none may change another's
    return rows


def _remember_written(staging: Path, layout: RowLayout, rows: StoredRows) -> None:
    """Within a reading_once() scope, `rows` as read_rows would read them back from `layout` in `staging` (the same
    files, renamed with their folder, keep their identities): the next read of them in the scope, or in a scope
    carried from it, is not a decoding and joining of every shard again."""
    tables = memo("rows")
    if tables is None or len(layout.shard_rows) != len(layout.shards):
        return  # shard sizes unknown: the next write needs them read from the files
    key = _rows_key([staging / name for name in layout.shards], None if layout.mask is None else staging / layout.mask)
    if key is None:
        return
    if layout.rows == len(rows.in_use):  # the shards hold every row given, the mask says which are in use
        written = StoredRows(dict(rows.columns), rows.in_use, layout)
    else:  # the rows in use, written as one shard
        written = StoredRows(rows.used(), np.ones(layout.rows, dtype=bool), layout)
    _read_back(staging, written, layout, set(rows.layout.shards) if rows.layout is not None else set())
    tables[key] = _read_only(written)
    written_keys = memo("rows_written")
    if written_keys is not None:
        written_keys[key] = True  # what a scope wrote, as opposed to what it read (models.train.carried_scope)


def _read_back(staging: Path, written: StoredRows, layout: RowLayout, linked: set[str]) -> None:
    """The shards and the mask this write added, read from their files, hold what `written` says (the rows a scope
    remembers instead of reading them again must be what a worker reading the files gets); InvalidModel otherwise.
    The shards linked from the version built on were read from their files already."""
    start = 0
    for name, count in zip(layout.shards, layout.shard_rows, strict=True):
        if name not in linked:
            stored = _decoded_once(staging / name, tuple(written.columns))
            for column, values in written.columns.items():
                part = values[start : start + count]
                if stored[column].dtype != part.dtype or not np.array_equal(stored[column], part):
                    raise InvalidModel(f"{name}: its {column} do not read back as written")
        start += count
    if layout.mask is not None:
        packed = _decoded_once(staging / layout.mask, ("in_use",))["in_use"]
        if not np.array_equal(np.unpackbits(packed, count=layout.rows).astype(bool), written.in_use):
            raise InvalidModel(f"{layout.mask}: the rows in use do not read back as written")


def write_rows(staging: Path, prefix: str, rows: StoredRows, source: Path | None) -> RowLayout:
    """Store `rows` in `staging`: the layout's shards linked from `source` (the version they are in) plus one
    shard of the rows after them and a mask, or all rows in use as one shard when there is no layout to build
    on or most rows would be masked; past SHARD_LIMIT shards, the first shard linked and the rest as one shard.
    Within a reading_once() scope the rows are remembered as written (_remember_written), and `rows`' arrays become
    read-only: the scope shares them."""
    layout = _write_rows(staging, prefix, rows, source)
    _remember_written(staging, layout, rows)
    return layout


def _write_rows(staging: Path, prefix: str, rows: StoredRows, source: Path | None) -> RowLayout:
    previous = rows.layout
    full = len(previous.shards) >= SHARD_LIMIT if previous is not None else False
    if (
        previous is None
        or source is None
        or rows.in_use.mean() < 0.5
        or (full and len(previous.shard_rows) != len(previous.shards))
    ):
        count = int(rows.in_use.sum())
        return RowLayout((write_shard(staging, prefix, rows.used()),), count, None, (count,))
    kept = previous.shards[:1] if full else previous.shards
    kept_rows = previous.shard_rows[:1] if full else previous.shard_rows
    for name in kept:
        link_or_copy(source / name, staging / name)
    after = sum(kept_rows) if full else previous.rows  # the rows written anew: after the shards kept
    shards, shard_rows = kept, kept_rows
    if len(rows.in_use) > after:
        tail = {name: column[after:] for name, column in rows.columns.items()}
        shards, shard_rows = (*kept, write_shard(staging, prefix, tail)), (*kept_rows, len(rows.in_use) - after)
    mask = None
    if not rows.in_use.all():
        mask = _write_named(staging, prefix, MASK_SUFFIX, {"in_use": np.packbits(rows.in_use)})
    known = shard_rows if len(shard_rows) == len(shards) else ()
    return RowLayout(shards, len(rows.in_use), mask, known)


def write_shard(staging: Path, prefix: str, columns: Mapping[str, np.ndarray]) -> str:
    return _write_named(staging, prefix, ".npz", columns)


def _write_named(staging: Path, prefix: str, suffix: str, columns: Mapping[str, np.ndarray]) -> str:
    """Write `columns` as an .npz named by its content; returns the name."""
    scratch = staging / f".{prefix}.writing.npz"
    save_arrays(scratch, columns)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    name = f"{prefix}-{digest[:16]}{suffix}"
    os.replace(scratch, staging / name)
    return name


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a copy where the file system has none); nothing when it exists."""
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
