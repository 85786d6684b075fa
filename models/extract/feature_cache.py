"""A disk cache of feature vectors, keyed by the image's bytes, the backbone and how the input was made.

A second training run on the same photos (another threshold, another head, a product added) then reads
the features instead of running the backbone again. Keys are sha256 of the namespace (backbone name,
weights sha256, input size), the variant (the original, or a synthetic copy's recipe) and the image
bytes, so a changed photo, other weights or another augmentation never hit a stale entry. Entries are
plain .npy files read with allow_pickle=False and written atomically; a damaged one is recomputed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


class FeatureCache:
    def __init__(self, folder: Path, namespace: str) -> None:
        self.folder = folder
        self._namespace = namespace.encode()
        self.hits = 0
        self.misses = 0

    def key(self, data: bytes, variant: str = "original") -> str:
        digest = hashlib.sha256()
        for part in (self._namespace, variant.encode(), data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        try:
            features: np.ndarray = np.load(self._path(key), allow_pickle=False)
        except (OSError, ValueError):  # missing, truncated or not an array: compute it again
            self.misses += 1
            return None
        if features.ndim != 1 or features.dtype != np.float32:
            self.misses += 1
            return None
        self.hits += 1
        return features

    def put(self, key: str, features: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.save(out, np.asarray(features, dtype=np.float32), allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
