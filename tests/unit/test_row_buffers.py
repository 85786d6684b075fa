"""Tables that grow in place (models.answer.row_buffers): no copy of the rows along one line of versions, and never
a row a view shows changed by another version's growth."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from models.answer import row_buffers
from models.answer.row_buffers import appended, as_float32
from models.answer.row_shards import StoredRows


def rows(count: int, value: float, dim: int = 4) -> np.ndarray:
    return np.full((count, dim), value, dtype=np.float16)


def test_a_column_grows_in_place_along_one_line_of_versions() -> None:
    first = appended(rows(3, 1), rows(2, 2))  # a column read from files: copied once, into a buffer
    second = appended(first, rows(1, 3))
    third = appended(second, rows(4, 4))
    assert first.base is second.base is third.base
    assert third.shape == (10, 4)
    np.testing.assert_array_equal(third[:, 0], [1, 1, 1, 2, 2, 3, 4, 4, 4, 4])
    assert first.shape == (5, 4) and second.shape == (6, 4)  # the older versions' rows are as they were
    np.testing.assert_array_equal(second[:, 0], [1, 1, 1, 2, 2, 3])


def test_a_second_version_grown_from_the_same_rows_gets_a_buffer_of_its_own() -> None:
    base = appended(rows(3, 1), rows(1, 2))
    one = appended(base, rows(2, 5))  # a quick enrolment's version
    other = appended(base, rows(2, 7))  # another built on the same base (a consolidation's carry, say)
    assert other.base is not one.base
    np.testing.assert_array_equal(one[:, 0], [1, 1, 1, 2, 5, 5])  # not overwritten by the other's rows
    np.testing.assert_array_equal(other[:, 0], [1, 1, 1, 2, 7, 7])
    after_one = appended(one, rows(1, 9))  # the first line still grows in place
    assert after_one.base is one.base


def test_views_are_read_only() -> None:
    grown = appended(rows(2, 1), rows(1, 2))
    with pytest.raises(ValueError, match="read-only"):
        grown[0, 0] = 5
    assert not as_float32(grown).flags.writeable


def test_a_full_buffer_is_copied_into_a_larger_one() -> None:
    column = appended(rows(1, 0), rows(1, 1))
    room = len(column.base) - len(column)
    full = appended(column, rows(room, 2))
    assert full.base is column.base and len(full) == len(full.base)
    beyond = appended(full, rows(1, 3))
    assert beyond.base is not full.base
    np.testing.assert_array_equal(beyond[:, 0], [0, 1, *[2] * room, 3])


def test_text_columns_grow_and_wider_text_gets_a_wider_buffer() -> None:
    names = appended(np.array(["gear-01", "ring-02"]), np.array(["nut-003"]))
    same_width = appended(names, np.array(["link-04"]))
    assert same_width.base is names.base
    wider = appended(same_width, np.array(["bracket-with-six-holes"]))
    assert wider.base is not names.base
    assert wider.tolist() == ["gear-01", "ring-02", "nut-003", "link-04", "bracket-with-six-holes"]


def test_float32_converts_only_the_rows_an_earlier_view_lacked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    first = appended(rng.normal(size=(5, 4)).astype(np.float16), rng.normal(size=(3, 4)).astype(np.float16))
    converted = as_float32(first)
    np.testing.assert_array_equal(converted, first.astype(np.float32))
    grown = appended(first, rng.normal(size=(2, 4)).astype(np.float16))
    state = row_buffers._BUFFERS[id(grown.base)]
    mirror = state.float32() if state.float32 is not None else None
    assert mirror is converted.base
    mirror[0, 0] = 123.0  # were the old rows converted again, this would be overwritten
    again = as_float32(grown)
    assert again.base is converted.base and again[0, 0] == 123.0
    np.testing.assert_array_equal(again[8:], grown[8:].astype(np.float32))
    np.testing.assert_array_equal(converted[:, 1:], first[:, 1:].astype(np.float32))


def test_float32_of_a_column_not_from_a_buffer_is_a_plain_copy() -> None:
    column = np.arange(6, dtype=np.float16).reshape(3, 2)
    converted = as_float32(column)
    assert converted.dtype == np.float32 and converted.base is None
    np.testing.assert_array_equal(converted, column)
    shifted = appended(column, rows(1, 1, 2))[1:]  # a view, but not of a buffer's first row
    np.testing.assert_array_equal(as_float32(shifted), shifted.astype(np.float32))


def test_a_buffer_is_forgotten_with_its_last_view() -> None:
    gc.collect()
    before = len(row_buffers._BUFFERS)
    grown = appended(rows(2, 1), rows(1, 2))
    as_float32(grown)
    assert len(row_buffers._BUFFERS) == before + 1
    del grown
    gc.collect()
    assert len(row_buffers._BUFFERS) == before


def test_stored_rows_grow_without_copying_their_columns() -> None:
    stored = StoredRows({"features": rows(3, 1), "products": np.array(["a", "a", "b"])}, np.ones(3, dtype=bool))
    once = stored.grown({"features": rows(1, 2), "products": np.array(["c"])})
    twice = once.grown({"features": rows(1, 3), "products": np.array(["d"])})
    assert twice.columns["features"].base is once.columns["features"].base
    assert twice.columns["products"].tolist() == ["a", "a", "b", "c", "d"]
    assert once.columns["products"].tolist() == ["a", "a", "b", "c"]
    assert twice.in_use.all() and len(twice.in_use) == 5


def test_the_float32_copy_goes_with_its_last_view_and_is_made_again_right() -> None:
    rng = np.random.default_rng(1)
    grown = appended(rng.normal(size=(4, 3)).astype(np.float16), rng.normal(size=(2, 3)).astype(np.float16))
    converted = as_float32(grown)
    state = row_buffers._BUFFERS[id(grown.base)]
    del converted
    gc.collect()
    assert state.float32 is not None and state.float32() is None  # the float16 rows' buffer does not hold it
    again = appended(grown, rng.normal(size=(1, 3)).astype(np.float16))
    np.testing.assert_array_equal(as_float32(again), again.astype(np.float32))


def test_rows_of_another_shape_are_refused_and_a_column_slice_is_not_its_buffer() -> None:
    grown = appended(rows(2, 1), rows(1, 2))
    with pytest.raises(ValueError, match="shape"):
        appended(grown, np.ones((1, 3), dtype=np.float16))
    with pytest.raises(ValueError, match="shape"):
        appended(grown, np.ones(4, dtype=np.float16))  # one row given flat: not broadcast into the table
    narrow = grown[:, :2]  # the buffer's first row and strides, but not its rows
    np.testing.assert_array_equal(as_float32(narrow), narrow.astype(np.float32))
    assert appended(narrow, rows(1, 3, dim=2)).base is not grown.base
