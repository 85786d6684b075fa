"""Tables of JSON records kept as content-named shards, so that a version that changes a few records of the
version it builds on writes bytes in proportion to those records, not to the catalog.

Two kinds of table, each a list of shards (`<prefix>-<sha256[:16]>.json`) named in the manifest:
- keyed (the catalog's records by product, each gallery product's spread): a shard is `{"records": {key: value}}`
  and a later shard's record of a key replaces an earlier one's;
- listed (the head's products and their categories, in the head's order): a shard is `{column: [values]}` and the
  table is each column's values of every shard, one after another.
The next version links the shards it keeps (models.store.blobs makes a shared file cost no bytes) and writes one
shard of what it adds or changes. A table that loses a key, or a listed one that is not its predecessor with
rows after it, or one past SHARD_LIMIT shards, is written again as one shard. Every shard is a file of the
version, hashed in its manifest and verified on load like every other.

Standard library only: the HTTP API reads a version's catalog without numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARD_LIMIT = 64


class MalformedRecords(ValueError):
    """A table's record in a manifest, or one of its shards, that is not what this module writes."""


@dataclass(frozen=True)
class StoredTable:
    """A table as a version stores it: its shards in order and what they hold together (a keyed table: records by
    key; a listed one: each column's values)."""

    shards: tuple[str, ...]
    content: Mapping[str, Any]

    def record(self) -> dict[str, Any]:
        return {"shards": list(self.shards)}


def shards_of(record: Any) -> tuple[str, ...]:
    """The shard names a manifest's table record lists (MalformedRecords for anything else)."""
    shards = record.get("shards") if isinstance(record, Mapping) else None
    if not isinstance(shards, list) or not shards or not all(_file_name(name) for name in shards):
        raise MalformedRecords("a table's record lists no shard file names")
    return tuple(shards)


def _file_name(name: Any) -> bool:
    return isinstance(name, str) and "/" not in name and name not in {"", ".", ".."}


def read_keyed(record: Any, path_of: Callable[[str], Path]) -> StoredTable:
    """A keyed table: each shard's records over the earlier ones'. `path_of(name)`: the file's (verified) path."""
    shards = shards_of(record)
    records: dict[str, Any] = {}
    for name in shards:
        path = path_of(name)
        part = _read(path).get("records")
        if not isinstance(part, dict):
            raise MalformedRecords(f"{path}: not a shard of keyed records")
        records.update(part)
    return StoredTable(shards, records)


def read_listed(record: Any, path_of: Callable[[str], Path], columns: Sequence[str]) -> StoredTable:
    """A listed table: each column's values of every shard, in order; every column as long as the others."""
    shards = shards_of(record)
    content: dict[str, list[Any]] = {column: [] for column in columns}
    for name in shards:
        path = path_of(name)
        part = _read(path)
        values = [part.get(column) for column in columns]
        lists = [value for value in values if isinstance(value, list)]
        if len(lists) != len(columns) or len({len(value) for value in lists}) != 1:
            raise MalformedRecords(f"{path}: not a shard of the columns {', '.join(columns)}")
        for column, value in zip(columns, lists, strict=True):
            content[column].extend(value)
    return StoredTable(shards, content)


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRecords(f"{path} is not readable JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise MalformedRecords(f"{path} is not a JSON object")
    return document


def write_keyed(
    staging: Path, prefix: str, records: Mapping[str, Any], previous: StoredTable | None, source: Path | None
) -> StoredTable:
    """Store `records` in `staging` on top of `previous` (the table of the version in `source`): its shards
    linked and one shard of the records added or changed; one shard of them all without a table to build on, when
    a key is gone, or past SHARD_LIMIT shards."""
    records = json.loads(json.dumps(dict(records)))  # as a reader will see them: tuples become lists
    if (
        previous is None
        or source is None
        or len(previous.shards) >= SHARD_LIMIT
        or not previous.content.keys() <= (records.keys())
    ):
        return StoredTable((_write(staging, prefix, {"records": records}),), records)
    old = previous.content
    changed = {key: value for key, value in records.items() if key not in old or old[key] != value}
    return StoredTable(_linked(staging, prefix, previous, source, {"records": changed} if changed else None), records)


def write_listed(
    staging: Path, prefix: str, content: Mapping[str, Sequence[Any]], previous: StoredTable | None, source: Path | None
) -> StoredTable:
    """Store the columns `content` in `staging` on top of `previous`: its shards linked and one shard of the values
    after them, when `previous` holds the first values of every column; otherwise (or past SHARD_LIMIT shards)
    one shard of them all."""
    columns = {name: list(values) for name, values in content.items()}
    kept = 0 if previous is None else len(next(iter(previous.content.values()), []))
    if (
        previous is None
        or source is None
        or len(previous.shards) >= SHARD_LIMIT
        or previous.content.keys() != columns.keys()
        or any(values[:kept] != list(previous.content[name]) for name, values in columns.items())
    ):
        return StoredTable((_write(staging, prefix, columns),), columns)
    after = {name: values[kept:] for name, values in columns.items()}
    return StoredTable(_linked(staging, prefix, previous, source, after if any(after.values()) else None), columns)


def _linked(
    staging: Path, prefix: str, previous: StoredTable, source: Path, added: Mapping[str, Any] | None
) -> tuple[str, ...]:
    for name in previous.shards:
        _link_or_copy(source / name, staging / name)
    return previous.shards if added is None else (*previous.shards, _write(staging, prefix, added))


def _write(staging: Path, prefix: str, document: Mapping[str, Any]) -> str:
    """One shard named by its content (compact JSON, keys sorted: the same records make the same bytes)."""
    data = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    name = f"{prefix}-{hashlib.sha256(data).hexdigest()[:16]}.json"
    scratch = staging / f".{name}.writing"
    scratch.write_bytes(data)
    os.replace(scratch, staging / name)
    return name


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
