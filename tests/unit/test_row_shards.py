"""Rows in content-named shards: a version adds a shard of its own rows, and past the shard limit writes what came
after its first shard as one shard, so that the catalog's rows are never written again for a few added ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.answer import row_shards
from models.answer.row_shards import StoredRows, read_rows, write_rows

COLUMNS = ("features", "products")


def rows_of(count: int, start: int = 0) -> dict[str, np.ndarray]:
    values = np.arange(start, start + count, dtype=np.float16)
    return {
        "features": np.stack([values, -values], axis=1),
        "products": np.array([f"p{i}" for i in range(start, start + count)]),
    }


def written(folder: Path, rows: StoredRows, source: Path | None) -> StoredRows:
    """`rows` written as a version in `folder` and read back from it, as the next version builds on it."""
    folder.mkdir()
    layout = write_rows(folder, "gallery", rows, source)
    return read_rows(layout, lambda name: folder / name, COLUMNS)


def test_past_the_shard_limit_the_first_shard_is_kept_and_the_rest_written_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(row_shards, "SHARD_LIMIT", 4)
    stored = written(tmp_path / "v0", StoredRows(rows_of(100), np.ones(100, dtype=bool)), None)
    (first,) = stored.layout.shards if stored.layout else ()
    source = tmp_path / "v0"
    for version in range(1, 4):  # three versions add a row each: four shards
        stored = written(tmp_path / f"v{version}", stored.grown(rows_of(1, 99 + version)), source)
        source = tmp_path / f"v{version}"
    assert stored.layout is not None and len(stored.layout.shards) == 4 and stored.layout.shard_rows == (100, 1, 1, 1)
    dropped = stored.grown(rows_of(1, 103)).keeping(np.arange(104) != 101)  # and one row out of use
    merged = written(tmp_path / "v4", dropped, source)
    assert merged.layout is not None and merged.layout.shards[0] == first  # the catalog's rows: linked, not written
    assert merged.layout.shard_rows == (100, 4) and merged.layout.mask is not None
    assert (tmp_path / "v4" / first).stat().st_ino == (tmp_path / "v0" / first).stat().st_ino
    assert (tmp_path / "v4" / merged.layout.shards[1]).stat().st_size < (tmp_path / "v0" / first).stat().st_size
    expected = {name: np.concatenate([rows_of(104)[name][:101], rows_of(104)[name][102:]]) for name in COLUMNS}
    for name in COLUMNS:
        assert np.array_equal(merged.used()[name], expected[name])
    again = written(tmp_path / "v5", merged.grown(rows_of(1, 104)), tmp_path / "v4")
    assert (
        again.layout is not None and again.layout.shards[:2] == merged.layout.shards and len(again.layout.shards) == 3
    )


def test_rows_whose_shard_sizes_are_not_known_or_mostly_dropped_are_written_as_one_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(row_shards, "SHARD_LIMIT", 2)
    stored = written(tmp_path / "v0", StoredRows(rows_of(10), np.ones(10, dtype=bool)), None)
    stored = written(tmp_path / "v1", stored.grown(rows_of(1, 10)), tmp_path / "v0")
    assert stored.layout is not None
    unknown = StoredRows(stored.columns, stored.in_use, row_shards.RowLayout(stored.layout.shards, stored.layout.rows))
    (tmp_path / "v2").mkdir()
    assert len(write_rows(tmp_path / "v2", "gallery", unknown, tmp_path / "v1").shards) == 1
    mostly_dropped = stored.keeping(np.arange(11) < 3)
    (tmp_path / "v3").mkdir()
    layout = write_rows(tmp_path / "v3", "gallery", mostly_dropped, tmp_path / "v1")
    assert len(layout.shards) == 1 and layout.rows == 3 and layout.mask is None


def test_rows_all_in_use_are_given_as_they_are_and_a_few_chosen_rows_as_a_copy() -> None:
    rows = StoredRows(rows_of(6), np.ones(6, dtype=bool))
    assert rows.used()["features"] is rows.columns["features"]  # not copied: 150 MB at 1,000 parts
    masked = rows.keeping(np.array([True, False, True, True, True, True]))
    used = masked.used()
    assert used["products"].tolist() == ["p0", "p2", "p3", "p4", "p5"]
    assert not np.shares_memory(used["features"], masked.columns["features"])
    chosen = masked.used_where(np.isin(masked.columns["products"], ["p1", "p2", "p5"]))  # p1 is out of use
    assert chosen["products"].tolist() == ["p2", "p5"] and chosen["features"][:, 0].tolist() == [2.0, 5.0]


def test_within_a_scope_a_file_is_decoded_once_and_its_arrays_are_read_only(tmp_path: Path) -> None:
    from models.answer.arrays import read_arrays, save_arrays
    from models.answer.read_once import reading_once
    from models.errors import ArtifactError

    save_arrays(tmp_path / "a.npz", rows_of(3))
    (tmp_path / "b.npz").hardlink_to(tmp_path / "a.npz")  # a version's shard, linked from the version before
    outside = read_arrays(tmp_path / "a.npz")
    assert read_arrays(tmp_path / "a.npz")["features"] is not outside["features"]  # no scope: read every time
    outside["features"][0, 0] = 7  # and the caller's own
    with reading_once():
        first = read_arrays(tmp_path / "a.npz", ("features",))
        again = read_arrays(tmp_path / "b.npz", ("features",))
        assert again["features"] is first["features"]
        with pytest.raises(ValueError, match="read-only"):
            first["features"][0, 0] = 7  # shared by every read of the scope
        with pytest.raises(ArtifactError, match="no array 'groups'"):
            read_arrays(tmp_path / "b.npz", ("groups",))
        with pytest.raises(ArtifactError, match=r"missing\.npz"):
            read_arrays(tmp_path / "missing.npz")
        save_arrays(tmp_path / "a.npz", rows_of(4))  # written again: another size and time, so read again
        assert len(read_arrays(tmp_path / "a.npz")["features"]) == 4


def test_rows_written_in_a_scope_are_read_back_from_it_as_the_files_hold_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an enrolment's verification (and the next enrolment, carried) reads the rows the write remembered: for each
    # way of writing (shards linked and one added, the first kept past the limit with a mask, the rows in use
    # rewritten as one shard) they must be what a read of the files outside any scope gives
    import contextvars

    from models.answer.read_once import reading_once

    monkeypatch.setattr(row_shards, "SHARD_LIMIT", 3)

    def from_files(folder: Path, layout: row_shards.RowLayout) -> StoredRows:
        return contextvars.Context().run(read_rows, layout, lambda name: folder / name, COLUMNS)  # no scope

    decoded: list[bool] = []  # each time rows are read from their files: whether in the scope
    read_files = row_shards._read_rows

    def reading(*args: object) -> StoredRows:
        decoded.append(row_shards.memo("rows") is not None)
        return read_files(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(row_shards, "_read_rows", reading)

    with reading_once():
        stored, source = StoredRows(rows_of(50), np.ones(50, dtype=bool)), None
        steps = [
            lambda rows: rows.grown(rows_of(1, 50)),
            lambda rows: rows.grown(rows_of(2, 51)),
            lambda rows: rows.grown(rows_of(1, 53)).keeping(np.arange(54) != 7),  # past the limit, one row dropped
            lambda rows: rows.keeping(np.arange(53) < 10),  # most rows dropped: rewritten
        ]
        for version, step in enumerate([lambda rows: rows, *steps]):
            folder = tmp_path / f"v{version}"
            folder.mkdir()
            given = step(stored)
            layout = write_rows(folder, "gallery", given, source)
            remembered = read_rows(layout, lambda name, folder=folder: folder / name, COLUMNS)
            truth = from_files(folder, layout)
            assert remembered.layout == truth.layout and np.array_equal(remembered.in_use, truth.in_use)
            for name in COLUMNS:
                assert np.array_equal(remembered.columns[name], truth.columns[name])
                assert remembered.columns[name].dtype == truth.columns[name].dtype
                assert not np.shares_memory(remembered.columns[name], truth.columns[name])  # from the scope
            stored, source = remembered, folder
        assert stored.layout is not None and stored.layout.rows == 10 and len(stored.layout.shards) == 1
    assert decoded == [False] * 5  # the five reads of the files outside the scope; none in it


def test_rows_that_do_not_read_back_as_written_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a scope serves the rows it wrote instead of reading them again: a shard written wrong must fail the write
    from models.answer.arrays import save_arrays
    from models.answer.read_once import reading_once
    from models.errors import InvalidModel

    def off_by_one(path: Path, arrays: dict[str, np.ndarray]) -> None:
        save_arrays(path, {**arrays, "features": arrays["features"] + 1} if "features" in arrays else arrays)

    stored = written(tmp_path / "v0", StoredRows(rows_of(5), np.ones(5, dtype=bool)), None)
    monkeypatch.setattr(row_shards, "save_arrays", off_by_one)
    (tmp_path / "v1").mkdir()
    with reading_once(), pytest.raises(InvalidModel, match="features do not read back as written"):
        write_rows(tmp_path / "v1", "gallery", stored.grown(rows_of(1, 5)), tmp_path / "v0")
