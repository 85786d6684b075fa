"""What one enrolment hands the next in a process: the sha256 and rows of the version it wrote, for that store only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.answer.read_once import Memos, identity
from models.answer.row_shards import StoredRows
from models.train.carried_scope import CarriedScope


def test_only_the_written_versions_files_are_carried_and_only_to_the_same_store(tmp_path: Path) -> None:
    store, other = tmp_path / "store", tmp_path / "other"
    old, new = store / "v1", store / "v2"
    for folder in (old, new, other):
        folder.mkdir(parents=True)
    (old / "training-a.npz").write_bytes(b"old rows")
    (new / "training-b.npz").write_bytes(b"new rows")
    (new / "training-a.npz").hardlink_to(old / "training-a.npz")  # linked: the same file in both
    (old / "head.npz").write_bytes(b"old head")
    shared, mine, gone = (identity(p) for p in (new / "training-a.npz", new / "training-b.npz", old / "head.npz"))
    rows = StoredRows({"features": np.zeros((2, 3), np.float16)}, np.ones(2, dtype=bool))
    hashed = {shared: "a", mine: "b", gone: "c"}
    written = ((shared, mine), None)
    before = ((shared,), None)  # the version before's table: all its files linked into the new one, but not written
    reads: Memos = {
        "rows": {written: rows, ((gone,), None): rows, before: rows},
        "rows_written": {written: True},
        "arrays": {shared: {}, gone: {}},  # the old version's head, decoded: not the written version's
        "graphs": {(shared, mine): "its photo index", (shared, gone): "another version's"},
    }
    carrier = CarriedScope()
    carrier.keep(store, new, hashed, reads)
    assert carrier.take(other).hashed == {}  # another store takes nothing, and what was kept is gone
    assert carrier.take(store).hashed == {}
    carrier.keep(store, new, hashed, reads)
    carried = carrier.take(store)
    assert carried.hashed == {shared: "a", mine: "b"}  # the old version's head: not the written version's
    # the decoded arrays of its files are carried (a head linked on is not decoded again); older tables are not
    # and the photo index loaded from its files (the served version's search shares it)
    assert carried.reads == {
        "rows": {written: rows},
        "arrays": {shared: {}},
        "graphs": {(shared, mine): "its photo index"},
    }


def test_what_no_enrolment_takes_is_let_go_and_nothing_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import time
    import weakref

    from models.train import carried_scope

    monkeypatch.setattr(carried_scope, "CARRY_FOR_S", 0.05)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "head.npz").write_bytes(b"head")
    carrier = CarriedScope()
    carrier.keep(tmp_path, tmp_path / "v1", {identity(tmp_path / "v1" / "head.npz"): "h"}, {})
    assert carrier._kept is not None
    held = weakref.ref(carrier._kept[1])
    deadline = time.monotonic() + 5
    while held() is not None and time.monotonic() < deadline:  # the timer fired, and holds no rows itself
        time.sleep(0.01)
        gc.collect()
    assert held() is None and carrier.take(tmp_path).hashed == {}
    carrier.keep(tmp_path, tmp_path / "v1", {identity(tmp_path / "v1" / "head.npz"): "h"}, {})
    assert carrier._kept is not None
    taken = weakref.ref(carrier._kept[1])
    carrier.take(tmp_path)  # an enrolment took it, and failed: nothing here holds what it read
    gc.collect()
    assert taken() is None and carrier._timer is None


def test_a_photo_index_is_carried_only_while_it_fits_beside_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.train import carried_scope

    store = tmp_path / "store"
    version = store / "v1"
    version.mkdir(parents=True)
    (version / "training-a.npz").write_bytes(b"rows")
    (version / "gallery-index-a.hnsw").write_bytes(b"a graph of 19 bytes")
    (version / "gallery-index-a.npz").write_bytes(b"projection")
    shard, graph, projection = (
        identity(version / name) for name in ("training-a.npz", "gallery-index-a.hnsw", "gallery-index-a.npz")
    )
    rows = StoredRows({"features": np.zeros((2, 3), np.float16)}, np.ones(2, dtype=bool))
    reads: Memos = {
        "rows": {((shard,), None): rows},
        "rows_written": {((shard,), None): True},
        "graphs": {(graph, projection): "index"},
    }
    room = carried_scope._bytes(rows)
    for cap, carried_graphs in ((room + 19, {(graph, projection): "index"}), (room + 18, {})):
        monkeypatch.setattr(carried_scope, "CARRY_MAX_BYTES", cap)
        carrier = CarriedScope()
        carrier.keep(store, version, {}, reads)
        carried = carrier.take(store)
        assert carried.reads["rows"] == {((shard,), None): rows} and carried.reads["graphs"] == carried_graphs
