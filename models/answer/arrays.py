"""A version's arrays on disk: an .npz file read without pickles, translated at the read into ArtifactError naming
the file when it is not one or lacks an array (what numpy raises for a bad file stops here; anything else is a bug
and propagates as itself)."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.answer.read_once import identity, memo
from models.errors import ArtifactError

# what np.load and NpzFile raise for a file that is missing, truncated, not a zip, or holds pickled data
_BAD_FILE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def read_arrays(path: Path, required: Sequence[str] = (), *, shared: bool = True) -> dict[str, np.ndarray]:
    """Every array of the .npz file at `path`; ArtifactError naming the file when it cannot be read as one or
    lacks one of `required`. Within a read_once.reading_once() scope a file is decoded once and its arrays, read-only,
    given to every later read of the same file (by inode, size and modification time); `shared` False: decoded
    anew and not kept (a caller that keeps what it makes of them: models.answer.row_shards)."""
    decoded = memo("arrays") if shared else None
    key = _identity(path) if decoded is not None else None
    if decoded is not None and key is not None:
        if key not in decoded:
            decoded[key] = _read_only(_decoded(path))
        arrays = dict(decoded[key])
    else:
        arrays = _decoded(path)
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ArtifactError(f"malformed model files: {path} has no array {', '.join(map(repr, missing))}")
    return arrays


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        return identity(path)
    except OSError:  # missing or unreadable: _decoded says so, naming the file
        return None


def _read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for array in arrays.values():
        array.flags.writeable = False  # shared by every read of the scope: none may change another's
    return arrays


def _decoded(path: Path) -> dict[str, np.ndarray]:
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ArtifactError(f"malformed model files: {path} is not an .npz file")
        with stored:
            arrays = {name: stored[name] for name in stored.files}
    except _BAD_FILE as exc:
        raise ArtifactError(f"malformed model files: {path} is not a readable .npz file ({exc})") from exc
    return arrays


_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's first date: no clock in the bytes


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Arrays as an .npz file numpy reads (np.load), byte for byte the same for the same arrays: np.savez stamps
    each entry with the time of writing, so two versions holding the same arrays would not share the file
    (models.store.blobs) and a content-named shard would not be named by its content."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
