"""A version's arrays on disk: an .npz file read without pickles, translated at the read into ArtifactError naming
the file when it is not one or lacks an array (what numpy raises for a bad file stops here; anything else is a bug
and propagates as itself)."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.errors import ArtifactError

# what np.load and NpzFile raise for a file that is missing, truncated, not a zip, or holds pickled data
_BAD_FILE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def read_arrays(path: Path, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every array of the .npz file at `path`; ArtifactError naming the file when it cannot be read as one or
    lacks one of `required`."""
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ArtifactError(f"malformed model files: {path} is not an .npz file")
        with stored:
            arrays = {name: stored[name] for name in stored.files}
    except _BAD_FILE as exc:
        raise ArtifactError(f"malformed model files: {path} is not a readable .npz file ({exc})") from exc
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ArtifactError(f"malformed model files: {path} has no array {', '.join(map(repr, missing))}")
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
