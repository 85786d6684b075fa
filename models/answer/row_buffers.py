"""Tables that grow by a few rows at a time without being copied: an enrolment adds 20 rows to a gallery of
20,000 (at 1,000 parts), and its version, then the next one's, each needed a fresh copy of every row (0.1-0.2 s
for each table) and the served gallery a fresh float32 conversion of every row (0.2 s).

`appended(column, added)` returns the column with `added` after it, as a view of a buffer with room to spare: when
`column` is the longest view handed out of such a buffer so far, the new rows are written into the room after it
and nothing is copied; otherwise (another version grew the same rows first, no room left, a column not from a
buffer) a new buffer is made. Rows a view shows never change: a buffer is only ever written past every view handed
out of it. `as_float32(column)` does the same for the float32 copy of a float16 column of such a buffer: the rows it
converted before are kept, only the rows after them converted. Views are read-only; a buffer, and its float32 copy,
live as long as a view of them does (the registry holds both weakly).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

ROOM = 0.1  # a new buffer's spare rows, as a share of its rows: 100 enrolments of 20 photos at 20,000 rows
MIN_ROOM = 256  # and at least these


@dataclass
class _Buffer:
    array: weakref.ref[np.ndarray]
    filled: int  # rows written: every view handed out is at most this long
    # the float32 copy of the rows it converted (its own capacity), held by its views alone: a process that serves
    # no gallery of these rows (`partsight enrol`) does not keep it beside the float16 rows
    float32: weakref.ref[np.ndarray] | None = None
    converted: int = 0


_BUFFERS: dict[int, _Buffer] = {}  # by id(); an entry goes with its buffer (weakref.finalize: _forget)
_LOCK = threading.Lock()


def appended(column: np.ndarray, added: np.ndarray) -> np.ndarray:
    """`column` with `added` after it (read-only), written in place after `column` when its buffer allows;
    ValueError for rows of another shape."""
    added = np.asarray(added)
    if added.shape[1:] != column.shape[1:]:
        raise ValueError(f"rows of shape {added.shape[1:]} added to rows of shape {column.shape[1:]}")
    if len(added) == 0:
        return column
    count = len(column) + len(added)
    with _LOCK:
        buffer, state = _buffer_of(column)
        if (
            buffer is not None
            and state is not None
            and state.filled == len(column)
            and len(buffer) >= count
            and _fits(added, buffer)
        ):
            buffer[len(column) : count] = added
            state.filled = count
            return _view(buffer, count)
    fresh = np.empty((count + max(MIN_ROOM, int(ROOM * count)), *column.shape[1:]), dtype=np.result_type(column, added))
    fresh[: len(column)] = column
    fresh[len(column) : count] = added
    with _LOCK:
        _BUFFERS[id(fresh)] = _Buffer(weakref.ref(fresh), filled=count)
    weakref.finalize(fresh, _forget, id(fresh))
    return _view(fresh, count)


def _forget(key: int) -> None:
    """A buffer's entry, gone with it. Without the lock: the collector may run this inside a block that holds it
    (one dict operation is atomic, and an id is not reused before its object's finalizers have run)."""
    _BUFFERS.pop(key, None)


def as_float32(column: np.ndarray) -> np.ndarray:
    """`column` as float32 (read-only): for a float16 view of a buffer, from the rows converted for an earlier view
    of it and the rows after them alone; otherwise converted whole."""
    with _LOCK:
        buffer, state = _buffer_of(column)
        if buffer is not None and state is not None and column.dtype == np.float16:
            mirror = state.float32() if state.float32 is not None else None
            if mirror is None:  # never converted, or no view of the conversion is left
                mirror, state.converted = np.empty(buffer.shape, dtype=np.float32), 0
                state.float32 = weakref.ref(mirror)
            if len(column) > state.converted:  # rows before state.filled never change: those converted stay right
                mirror[state.converted : len(column)] = column[state.converted :]
                state.converted = len(column)
            return _view(mirror, len(column))
    return column.astype(np.float32)  # not under the lock: a whole table's conversion


def _buffer_of(column: np.ndarray) -> tuple[np.ndarray | None, _Buffer | None]:
    """The buffer `column` is a leading view of, and its state ((None, None): it is not one)."""
    base = column.base
    state = _BUFFERS.get(id(base)) if isinstance(base, np.ndarray) else None
    if state is None or state.array() is not base or not isinstance(base, np.ndarray):
        return None, None
    if (
        column.__array_interface__["data"][0] != base.__array_interface__["data"][0]
        or column.strides != base.strides
        or column.shape[1:] != base.shape[1:]
    ):
        return None, None
    return base, state


def _fits(added: np.ndarray, buffer: np.ndarray) -> bool:
    """Whether `added` (rows of the buffer's shape) goes into `buffer` unchanged (the same kind of value, no wider)."""
    if added.dtype.kind in "US":
        return added.dtype.kind == buffer.dtype.kind and added.dtype.itemsize <= buffer.dtype.itemsize
    return added.dtype == buffer.dtype


def _view(buffer: np.ndarray, rows: int) -> np.ndarray:
    view = buffer[:rows]
    view.flags.writeable = False
    return view
