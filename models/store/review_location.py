"""Opens the review store PARTSIGHT_REVIEW_STORE names: a directory (models.store.review_dir.ReviewStore) or, for
`s3://BUCKET/PREFIX`, an S3-compatible bucket (models.store.review_s3.S3ReviewStore); the worker and the API both open
theirs here. Stdlib only until an S3 store opens (then the minio SDK).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeAlias

from models.errors import ReviewError
from models.store.review_dir import ReviewStore
from models.store.review_s3 import SCHEME, S3Location, S3ReviewStore
from models.store.versions import MANIFEST

REVIEW_DIR = "review"  # the review queue's default home, inside the model store

AnyReviewStore: TypeAlias = ReviewStore | S3ReviewStore
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


def open_review_store(
    where: ReviewLocation,
    *,
    max_items: int,
    max_bytes: int,
    max_age_s: float,
    clock: Callable[[], float] = time.time,
) -> AnyReviewStore:
    """The store at `where`, created (a directory) or checked (a bucket: it exists, the credentials are accepted);
    ReviewError when it cannot be. Whether it can be written is the caller's to check (check_writable)."""
    if isinstance(where, S3Location):
        return S3ReviewStore(where, max_items=max_items, max_bytes=max_bytes, max_age_s=max_age_s, clock=clock)
    return ReviewStore(where, max_items=max_items, max_bytes=max_bytes, max_age_s=max_age_s, clock=clock)
