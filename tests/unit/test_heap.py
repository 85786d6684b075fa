"""Giving the heap's free pages back: a real call into the C library where it is glibc, nothing elsewhere."""

from __future__ import annotations

import ctypes.util
import platform

from models.extract import heap


def test_free_heap_is_given_back_where_the_c_library_can() -> None:
    glibc = platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c") is not None
    assert heap.release_free_heap() is glibc


def test_without_malloc_trim_nothing_happens(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.release_free_heap() is False
