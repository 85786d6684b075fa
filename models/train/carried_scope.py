"""What one enrolment read and wrote, carried to the next enrolment in the same process.

An enrolment reads the version it builds on (every file's sha256, the enrolment base's and the gallery's rows) and
writes the next; a worker enrolling parts one after the other builds each on the version it wrote a moment before.
At 1,000 parts x 20 photos, reading that version again (150 MB of rows hashed, decoded and joined) was most of what
an enrolment's cost grew by. So an enrolment hands what its scopes know of the version it wrote (each file's sha256:
models.store.versions.hashing_once; its rows as written and the arrays its files were decoded into:
models.answer.read_once) to the next one, which trusts them as the scopes did: only for files with the same inode,
size and modification time, as a worker trusts the bundle its own enrolment's verification loaded (models.bundle).
Any other version's files, or these files changed, are read and verified as ever. Rows past CARRY_MAX_BYTES are not
kept between enrolments (nor arrays past what is left of it), and nothing is kept past CARRY_FOR_S (a process that
enrolled once does not hold 150 MB for the next enrolment that may never come). The photo index the written version's
verification loaded is carried too, within the same cap: a worker's served version searches that very graph.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.read_once import Memos, identity

CARRY_MAX_BYTES = 512 * 2**20  # rows held between enrolments (10,000 parts x 5 photos: 2 x 190 MB of float16)
CARRY_FOR_S = 300.0  # and for this long: a burst's enrolments come seconds apart; a worker that enrolled once lets go


@dataclass
class Carried:
    """What a scope knew: each file's sha256 and what it read (read_once), by file identity."""

    hashed: dict[tuple[int, int, int, int], str] = field(default_factory=dict)
    reads: Memos = field(default_factory=dict)


class CarriedScope:
    """The scopes of the last enrolment of a store in this process, for the next one (taken once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: tuple[str, Carried] | None = None
        self._timer: threading.Timer | None = None
        self._generation = 0  # what a timer names: never the rows themselves, which it would hold

    def take(self, store: Path) -> Carried:
        """What the last enrolment kept for `store` (nothing, when there was none or it was of another store);
        nothing is held here afterwards, whatever becomes of the enrolment that takes it."""
        with self._lock:
            kept, self._kept = self._kept, None
            self._stop_timer()
        return kept[1] if kept is not None and kept[0] == str(store.resolve()) else Carried()

    def keep(self, store: Path, version_dir: Path, hashed: dict[Any, str] | None, reads: Memos | None) -> None:
        """Keep, of what the scopes know (`hashed`, `reads`), what concerns the files of `version_dir` (the version
        just written) alone, for CARRY_FOR_S."""
        try:
            files = {identity(path) for path in version_dir.iterdir() if path.is_file()}
        except OSError:
            return
        kept_hashes = {key: digest for key, digest in (hashed or {}).items() if key in files}
        # the tables the version was written with: those the next enrolment reads. Not every table whose files the
        # version links: the version before it is one (its shards, no mask), and the one before that, and so on
        written = (reads or {}).get("rows_written", {})
        rows = {
            key: value for key, value in (reads or {}).get("rows", {}).items() if key in written and _all_in(key, files)
        }
        rows_bytes = sum(_bytes(value) for value in rows.values())
        if rows_bytes > CARRY_MAX_BYTES:
            rows, rows_bytes = {}, 0
        # the arrays decoded from its files (the head's nodes, its refinements: linked from version to version, so
        # the next verification decodes only the files it adds), while they fit beside the rows
        arrays = {key: value for key, value in (reads or {}).get("arrays", {}).items() if key in files}
        arrays_bytes = sum(int(a.nbytes) for value in arrays.values() for a in value.values())
        if rows_bytes + arrays_bytes > CARRY_MAX_BYTES:
            arrays, arrays_bytes = {}, 0
        # the photo index its verification loaded, which the served version searches too (models.answer.gallery_rows),
        # while it fits beside them (counted as its file's size: hnswlib holds about that in memory)
        graphs = {key: value for key, value in (reads or {}).get("graphs", {}).items() if set(key) <= files}
        if rows_bytes + arrays_bytes + sum(graph[2] for graph, _ in graphs) > CARRY_MAX_BYTES:
            graphs = {}
        with self._lock:
            self._stop_timer()
            self._generation += 1
            self._kept = (
                str(store.resolve()),
                Carried(kept_hashes, {"rows": rows, "arrays": arrays, "graphs": graphs}),
            )
            self._timer = threading.Timer(CARRY_FOR_S, self._let_go, args=(self._generation,))
            self._timer.daemon = True
            self._timer.start()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _let_go(self, generation: int) -> None:
        """CARRY_FOR_S after it was kept: no enrolment followed, so nothing is held for one."""
        with self._lock:
            if self._generation == generation:
                self._kept, self._timer = None, None


def _all_in(key: Any, files: set[Any]) -> bool:
    """Whether a table's key (its shards' identities and its mask's: models.answer.row_shards) names `files` alone."""
    shards, mask = key
    return all(identity in files for identity in shards) and (mask is None or mask in files)


def _bytes(rows: Any) -> int:
    """What a table holds in memory: the whole buffer a column is a view of (models.answer.row_buffers), room too."""
    arrays = (*rows.columns.values(), rows.in_use)
    return sum(int((a.base if isinstance(a.base, np.ndarray) else a).nbytes) for a in arrays)
