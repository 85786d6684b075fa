"""`partsight enrol`: what the API's enrolment does, from the command line, in this process.

The request is stored in the store's enrolments/ like any other (the API and the operator page list it), the
features are computed here with the current version's own engine, and the new version is written and made
current under the store's lock. Workers are told on Redis (PARTSIGHT_REDIS_URL) to load it at once; when Redis
cannot be reached they load it at their next poll, and the command says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from broker.dispatch import announce_current, redis_client_url
from broker.settings import redis_url_from_env
from models.bundle import ModelBundle
from models.errors import EnrolmentError, ImageError, StoreBusy
from models.extract.decode import DecodeLimits
from models.recognizer import Recognizer
from models.store.enrolment_requests import BUSY, DONE, QUEUED, EnrolmentStore
from models.store.retention import keep_from_env

logger = logging.getLogger(__name__)
TRY_AGAIN_EXIT = 75  # EX_TEMPFAIL: the store was busy (its lock, or a full head while a consolidation runs)


def catalog_record(raw: str | None) -> dict[str, Any] | None:
    """--catalog-record: JSON text, or @FILE holding it."""
    if raw is None:
        return None
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise EnrolmentError(f"--catalog-record {raw}: cannot read it: {exc.strerror or exc}") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnrolmentError(f"--catalog-record is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise EnrolmentError("--catalog-record must be a JSON object with name and category")
    return record


def read_photos(paths: Sequence[str]) -> list[tuple[str, bytes]]:
    photos = []
    for name in paths:
        path = Path(name)
        try:
            photos.append((path.name, path.read_bytes()))
        except OSError as exc:
            raise EnrolmentError(f"photo {name}: cannot read it: {exc.strerror or exc}") from exc
    return photos


class LocalFeatures:
    """A version's engine in this process, loaded once per version."""

    def __init__(self, device: str, weights: Path | None) -> None:
        self._device, self._weights = device, weights
        self._loaded: dict[str, Any] = {}

    def __call__(self, bundle: ModelBundle, photos: Sequence[bytes]) -> list[np.ndarray | ImageError]:
        from models.train.enrolment import photo_features  # noqa: PLC0415 - scikit-learn only when enrolling

        engine = self.load(bundle.path).engine
        return photo_features(lambda data: engine.prepare(data, DecodeLimits()), engine.features, photos)

    def loaded(self) -> ModelBundle | None:
        """The version loaded last, as a worker's served model (an enrolment builds on it while it is current)."""
        return next((recognizer.bundle for recognizer in self._loaded.values()), None)

    def load(self, version: Path) -> Recognizer:
        """The version loaded as a worker serves it (kept: the next enrolment builds on it)."""
        recognizer = self._loaded.get(str(version))
        if recognizer is None:
            recognizer = Recognizer.load(version, weights=self._weights, device=self._device)
            self._loaded = {str(version): recognizer}
        return recognizer


def tell_workers(version: str, env: dict[str, str], reason: str = "enrolment") -> bool:
    """Publish on MODEL_CHANNEL; False when Redis cannot be reached."""
    try:
        client = redis.Redis.from_url(redis_client_url(redis_url_from_env(env)), socket_timeout=3)
        announce_current(client, version, reason)
        client.close()
        return True
    except (redis.RedisError, OSError, ValueError) as exc:
        logger.debug("could not announce on Redis: %s", exc)
        return False


def _lock_not_taken(requests: EnrolmentStore, enrolment: str, exc: StoreBusy) -> int:
    """The store's lock was held past the wait: the request recorded failed (`busy`) while still queued, or, where a
    worker enrolling the product took it along meanwhile, left to that worker; TRY_AGAIN_EXIT either way."""
    state = requests.get(enrolment)["state"]
    if state == QUEUED:  # the moment between this look and the record is a worker's only chance to take it too
        requests.failed(enrolment, BUSY, str(exc))
        print(f"partsight enrol: {exc}; nothing was enrolled", file=sys.stderr)
    else:
        print(f"partsight enrol: {exc}; a worker took enrolment {enrolment} along ({state})", file=sys.stderr)
    return TRY_AGAIN_EXIT


def run_enrol(args: argparse.Namespace) -> int:
    from models.train.enrolment_runs import run_request  # noqa: PLC0415 - scikit-learn only when enrolling

    store = Path(args.store)
    if not (store / "current").exists():
        print(f"partsight enrol: {store} is not a model store (no 'current'); name the folder `train --out` wrote")
        return 2
    photos = read_photos(args.photos)
    record = catalog_record(args.catalog_record)
    requests = EnrolmentStore(store)
    enrolment = requests.create(args.product, photos, record=record, source="cli")
    weights = os.environ.get("PARTSIGHT_BACKBONE_WEIGHTS")
    features = LocalFeatures(os.environ.get("PARTSIGHT_DEVICE", "auto"), Path(weights) if weights else None)
    told: list[bool] = []  # the workers are told the moment current moves, before the look-alike check
    try:
        outcome = run_request(
            store,
            enrolment,
            features,
            keep_versions=keep_from_env(os.environ),
            on_served=lambda version: told.append(tell_workers(version, dict(os.environ))),
            fail_when_full=True,  # recorded failed under the store's lock: no worker takes it along later
        )
    except StoreBusy as exc:  # the store's lock held too long: a worker may have taken the request along meanwhile
        return _lock_not_taken(requests, enrolment, exc)
    if outcome.state != DONE and (outcome.error or {}).get("code") == BUSY:
        print(f"partsight enrol: {(outcome.error or {}).get('message')}; nothing was enrolled", file=sys.stderr)
        return TRY_AGAIN_EXIT
    if outcome.state != DONE:
        error = outcome.error or {}
        print(f"partsight enrol: {error.get('message')} ({error.get('code')}); current is unchanged", file=sys.stderr)
        return 2
    enrolled = outcome.enrolled
    assert enrolled is not None and outcome.version is not None
    kind = "new product" if enrolled.new_product else "known product"
    skipped = f", {enrolled.duplicates} already enrolled" if enrolled.duplicates else ""
    print(
        f"enrolled {enrolled.photos} photo(s) of {args.product} ({kind}{skipped}) as version {outcome.version} "
        f"in {enrolled.seconds:.1f} s; it is current (enrolment {enrolment})"
    )
    for look_alike in enrolled.confusable_with:
        print(
            f"look-alike: {float(look_alike['share']):.0%} of its photos were answered as {look_alike['product']} when "
            "held out (more photos of each, from the angles that tell them apart, help)"
        )
    if told and told[-1]:  # told once current moved (every version written is served so)
        print("workers were told on Redis to load it as soon as it was current")
    else:
        print("Redis could not be reached: workers load it at their next poll (PARTSIGHT_MODEL_RELOAD_S)")
    if not args.no_consolidate:
        _consolidate(store)
    return 0


def _consolidate(store: Path) -> None:
    """The refit that folds the quick enrolment into the head, now (the product was answerable meanwhile)."""
    from models.errors import ModelError  # noqa: PLC0415 - only when enrolling

    print("consolidating: the head fitted again with the product, the novelty score calibrated again ...")
    try:
        consolidate_store(store, keep_from_env(os.environ))
    except ModelError as exc:  # the quick version stays current and answers the product
        print(f"the consolidation failed ({exc}); the quick version stays current", file=sys.stderr)


def consolidate_store(store: Path, keep: int) -> int:
    """Fold the refinements of quick enrolments into current's head (`partsight models --consolidate`, and
    `partsight enrol` after its version), and tell the workers; BUSY_EXIT (75) when another process
    consolidates the store. ModelError for a consolidation that failed."""
    from models.errors import ConsolidationBusy  # noqa: PLC0415 - beside the import below
    from models.train.consolidation import BUSY_EXIT, consolidate_all  # noqa: PLC0415 - only when consolidating

    try:
        outcomes = consolidate_all(store, keep_versions=keep)
    except ConsolidationBusy as exc:
        print(f"not now: {exc}; it takes these enrolments along", file=sys.stderr)
        return BUSY_EXIT
    written = None
    for outcome in outcomes:
        if outcome.version is None:
            print(f"nothing written: {outcome.reason}")
            continue
        written = outcome.version
        print(
            f"version {outcome.version}: {outcome.folded} quick enrolment(s) folded in by a refit of "
            f"{outcome.refit_s:.1f} s, {outcome.carried} carried over; it is current"
        )
    if written is not None and tell_workers(written, dict(os.environ), reason="consolidation"):
        print("workers were told on Redis")
    return 0
