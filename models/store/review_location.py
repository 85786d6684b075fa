"""Opens the review store (a models.store.review_store.ReviewStore) PARTSIGHT_REVIEW_STORE names: a directory
(models.store.review_dir.DirectoryReviewStore) or, for `s3://BUCKET/PREFIX`, an S3-compatible bucket
(models.store.review_s3.S3ReviewStore); the worker and the API both open theirs here. Stdlib only until an S3 store
opens (then the minio SDK).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeAlias

from broker.errors import SettingsError
from broker.settings import env_float, env_int, secret_from_file
from models.errors import ReviewError
from models.store.review_dir import DirectoryReviewStore
from models.store.review_s3 import SCHEME, SECRET_KEY_VAR, S3Location, S3ReviewStore
from models.store.review_store import ReviewStore
from models.store.versions import DEFAULT_STORE, MANIFEST

REVIEW_DIR = "review"  # the review queue's default home, inside the model store
DEFAULT_MAX_ITEMS = 10_000
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_AGE_S = 7 * 24 * 3600.0

ReviewLocation: TypeAlias = Path | S3Location  # what settings read from PARTSIGHT_REVIEW_STORE


def is_s3(raw: str) -> bool:
    """Whether a PARTSIGHT_REVIEW_STORE value names an S3 store (`s3://`, any case) rather than a directory."""
    return raw[: len(SCHEME)].lower() == SCHEME


def review_location(env: Mapping[str, str], model_dir: Path, read_secret: Callable[[], str | None]) -> ReviewLocation:
    """PARTSIGHT_REVIEW_STORE as every process reads it: a directory, by default `review/` in the model store (the
    store above the version when `model_dir` names a version directory), or `s3://BUCKET[/PREFIX]` with the
    PARTSIGHT_REVIEW_S3_* settings (`read_secret` reads the secret key, only then). ReviewError when it is neither."""
    raw = env.get("PARTSIGHT_REVIEW_STORE", "")
    if is_s3(raw):
        return S3Location.from_env(env, raw, secret_key=read_secret())
    if "://" in raw:
        raise ReviewError(f"PARTSIGHT_REVIEW_STORE must be a directory or s3://BUCKET[/PREFIX], got {raw!r}")
    if raw:
        return Path(raw)
    store = model_dir.parent if (model_dir / MANIFEST).is_file() else model_dir
    return store / REVIEW_DIR


@dataclass(frozen=True)
class ReviewSettings:
    """Where the review queue lives and its bounds: read once, the same way, by the worker and the API."""

    location: ReviewLocation
    max_items: int = DEFAULT_MAX_ITEMS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_s: float = DEFAULT_MAX_AGE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str], model_dir: Path) -> ReviewSettings:
        """PARTSIGHT_REVIEW_STORE and PARTSIGHT_REVIEW_MAX_*, as the worker and the API read them (`model_dir`:
        PARTSIGHT_MODEL_DIR, whose store holds review/ by default); a SettingsError naming what is wrong."""
        try:
            location = review_location(env, model_dir, partial(secret_from_file, env, SECRET_KEY_VAR))
        except ReviewError as exc:
            raise SettingsError(str(exc)) from exc
        return cls(
            location,
            max_items=env_int(env, "PARTSIGHT_REVIEW_MAX_ITEMS", DEFAULT_MAX_ITEMS, minimum=1),
            max_bytes=env_int(env, "PARTSIGHT_REVIEW_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1),
            max_age_s=env_float(env, "PARTSIGHT_REVIEW_MAX_AGE_S", DEFAULT_MAX_AGE_S, minimum=1.0),
        )

    def open(self, clock: Callable[[], float] = time.time) -> ReviewStore:
        """The store, created or checked (open_review_store)."""
        return open_review_store(
            self.location, max_items=self.max_items, max_bytes=self.max_bytes, max_age_s=self.max_age_s, clock=clock
        )


# where the review queue lives when nothing says otherwise: review/ in the default model store
DEFAULT_REVIEW = ReviewSettings(Path(DEFAULT_STORE) / REVIEW_DIR)


def open_review_store(
    where: ReviewLocation,
    *,
    max_items: int,
    max_bytes: int,
    max_age_s: float,
    clock: Callable[[], float] = time.time,
) -> ReviewStore:
    """The store at `where`, created (a directory) or checked (a bucket: it exists, the credentials are accepted);
    ReviewError when it cannot be. Whether it can be written is the caller's to check (check_writable)."""
    if isinstance(where, S3Location):
        return S3ReviewStore(where, max_items=max_items, max_bytes=max_bytes, max_age_s=max_age_s, clock=clock)
    return DirectoryReviewStore(where, max_items=max_items, max_bytes=max_bytes, max_age_s=max_age_s, clock=clock)
