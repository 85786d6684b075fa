"""Lines: named sets of products (and whole categories) a camera's frames are answered among, and which line each
device is on, kept in the model store beside its versions (`lines.json`), not in a version: changing a line makes
no version, and every version answers with the lines of the moment.

A frame names its line (the MQTT 5 user property `line`), or its device's line applies, or none does (the whole
catalog). The file is rewritten whole (one rename) under the store's lines lock, which is apart from its versions'
lock: an enrolment in progress never holds up a line. Standard library only: the API and the command line use it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.contract import is_line_name
from models.errors import LineError
from models.store.versions import store_lock

logger = logging.getLogger(__name__)

LINES_FILE = "lines.json"
LOCK_PART = "lines"
MAX_DEVICE_LENGTH = 128  # a device id is one MQTT topic level (broker.topics, which models may not import)
UNKNOWN_LINE, UNKNOWN_PRODUCT, UNKNOWN_CATEGORY = "unknown_line", "unknown_product", "unknown_category"
LINE_IN_USE, BAD_LINE, BAD_DEVICE = "line_in_use", "bad_line", "bad_device"


@dataclass(frozen=True)
class Line:
    """What a line makes: products by id and whole categories; `updated_at` tells one edit of it from the next."""

    name: str
    products: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    updated_at: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "line": self.name,
            "products": list(self.products),
            "categories": list(self.categories),
            "updated_at": self.updated_at,
        }

    def admits(self, product: str, category: str) -> bool:
        return product in self.products or category in self.categories


@dataclass(frozen=True)
class Lines:
    """Every line of a store and the line of every device that has one."""

    lines: Mapping[str, Line] = field(default_factory=dict)
    devices: Mapping[str, str] = field(default_factory=dict)

    def line_for(self, device: str, named: str | None) -> Line | None:
        """The line a frame is answered on: the one it names, else its device's, else None (the whole catalog).
        LineError `unknown_line` for a name that is no line."""
        name = named if named is not None else self.devices.get(device)
        if name is None:
            return None
        line = self.lines.get(name)
        if line is None:
            raise LineError(f"there is no line {name[:80]!r}: name one of GET /v1/lines", UNKNOWN_LINE)
        return line

    def devices_on(self, name: str) -> list[str]:
        return sorted(device for device, line in self.devices.items() if line == name)

    def document(self) -> dict[str, Any]:
        return {
            "lines": {name: line.record() for name, line in sorted(self.lines.items())},
            "devices": dict(sorted(self.devices.items())),
        }


def check_line_name(name: object, code: str = UNKNOWN_LINE) -> str:
    """A line name; LineError with `code` otherwise (`unknown_line` where a line is looked up: a name that is not
    one names no line; `bad_line` where one is made)."""
    if not is_line_name(name):
        shown = str(name)[:80]
        raise LineError(
            f"{shown!r} is not a line name: 1-64 characters of A-Z a-z 0-9 . _ -, the first a letter or a digit", code
        )
    assert isinstance(name, str)
    return name


def check_device(device: object) -> str:
    if not isinstance(device, str) or not device or len(device) > MAX_DEVICE_LENGTH or any(c in device for c in "/+#"):
        raise LineError(f"{str(device)[:80]!r} is not a device id (one MQTT topic level)", BAD_DEVICE)
    return device


def read_lines(store: Path) -> Lines:
    """The store's lines (none when it has no lines file); LineError `bad_line` when the file is malformed."""
    try:
        document = json.loads((store / LINES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Lines()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LineError(f"{store / LINES_FILE} cannot be read ({exc}); fix or remove it", BAD_LINE) from exc
    return _parse(document, store / LINES_FILE)


def _parse(document: Any, where: Path) -> Lines:
    try:
        lines = {
            name: Line(
                check_line_name(name),
                tuple(str(p) for p in record.get("products", ())),
                tuple(str(c) for c in record.get("categories", ())),
                str(record.get("updated_at", "")),
            )
            for name, record in document.get("lines", {}).items()
        }
        devices = {check_device(device): check_line_name(line) for device, line in document.get("devices", {}).items()}
    except (AttributeError, TypeError, LineError) as exc:
        raise LineError(f"{where} is malformed ({exc}); fix or remove it", BAD_LINE) from exc
    return Lines(lines, devices)


def put_line(
    store: Path,
    name: str,
    *,
    products: Iterable[str],
    categories: Iterable[str],
    known_products: Collection[str],
    known_categories: Collection[str],
    timeout_s: float = 10.0,
) -> Line:
    """Create or replace a line; every product and category must be in the catalog (`known_*`: the current
    version's), else LineError `unknown_product` / `unknown_category` and nothing changes."""
    check_line_name(name, BAD_LINE)
    wanted = _unique(products, "products")
    kinds = _unique(categories, "categories")
    if not wanted and not kinds:
        raise LineError(f"line {name!r} names no product and no category", BAD_LINE)
    missing = [p for p in wanted if p not in known_products]
    if missing:
        raise LineError(f"not in the catalog: {', '.join(missing[:20])}", UNKNOWN_PRODUCT)
    missing = [c for c in kinds if c not in known_categories]
    if missing:
        raise LineError(f"no product of the catalog is in categories {', '.join(missing[:20])}", UNKNOWN_CATEGORY)
    line = Line(name, wanted, kinds, datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    with store_lock(store, timeout_s, part=LOCK_PART):
        current = read_lines(store)
        _write(store, Lines({**current.lines, name: line}, current.devices))
    return line


def _unique(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(value, str) and value for value in values):
        raise LineError(f"{what} must be a list of ids", BAD_LINE)
    return tuple(dict.fromkeys(values))


def delete_line(store: Path, name: str, *, timeout_s: float = 10.0) -> Line:
    """Remove a line no device is on; LineError `unknown_line`, or `line_in_use` naming the devices on it."""
    check_line_name(name)
    with store_lock(store, timeout_s, part=LOCK_PART):
        current = read_lines(store)
        if name not in current.lines:
            raise LineError(f"there is no line {name!r}", UNKNOWN_LINE)
        devices = current.devices_on(name)
        if devices:
            raise LineError(f"devices are on line {name!r}: {', '.join(devices[:20])}; move them first", LINE_IN_USE)
        _write(store, Lines({k: v for k, v in current.lines.items() if k != name}, current.devices))
    return current.lines[name]


def set_device_line(store: Path, device: str, line: str | None, *, timeout_s: float = 10.0) -> None:
    """Put `device` on `line` (None: on no line, the whole catalog); LineError `unknown_line` for no such line."""
    check_device(device)
    with store_lock(store, timeout_s, part=LOCK_PART):
        current = read_lines(store)
        devices = {k: v for k, v in current.devices.items() if k != device}
        if line is not None:
            if check_line_name(line) not in current.lines:
                raise LineError(f"there is no line {line!r}: create it first (PUT /v1/lines/{line})", UNKNOWN_LINE)
            devices[device] = line
        _write(store, Lines(current.lines, devices))


def _write(store: Path, lines: Lines) -> None:
    staging = store / f".{LINES_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    staging.write_text(json.dumps(lines.document(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(staging, store / LINES_FILE)


class LinesView:
    """A process's view of a store's lines, read again when the file changed (a stat, at most every
    `check_every_s`) or when told (`changed()`, on the announcement): a worker sees a new line within a second."""

    def __init__(self, store: Path, *, clock: Any, check_every_s: float = 0.5) -> None:
        self._store, self._clock, self._every = store, clock, check_every_s
        self._stamp: tuple[int, int, int] | None = None
        self._lines = Lines()
        self._checked = float("-inf")

    def changed(self) -> None:
        self._checked = float("-inf")

    def current(self) -> Lines:
        """The lines as they are (a malformed file is logged, and the last good view kept)."""
        now = self._clock()
        if now - self._checked < self._every:
            return self._lines
        self._checked = now
        try:
            stat = (self._store / LINES_FILE).stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._lines = read_lines(self._store) if stamp is not None else Lines()
            except LineError as exc:  # an edit by hand gone wrong: frames keep the lines they had
                logger.error("%s; the lines read before stay in use", exc)
        return self._lines
