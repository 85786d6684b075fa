"""Consolidation: the refinements quick enrolments left on the head folded into its nodes by a full refit.

It refits the current version's rows with the classifiers training chose and calibrates the novelty score again
on leave-products-out folds (models.train.enrolment.refit) without holding the store's lock, so enrolments go on
meanwhile. Then, under the lock, it takes `current` as it finds it: when that is the version it refitted, or one
built on it by quick enrolments only (its refinements start with the refitted version's), the new version is the
refitted head plus the refinements of the enrolments that came meanwhile, over the newest rows, gallery and
catalog, verified and made current like any version. When `current` went elsewhere (a training, an activation,
another consolidation), nothing is written. `consolidate_all` runs until no refinement is left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from models.answer.head import ProductHead
from models.answer.refinements import Refinement
from models.bundle import ModelBundle, load_model, stored_gallery
from models.store.retention import prune
from models.store.versions import store_lock
from models.train.enrolment import Refitted, base_of, refit_for_enrolment, stored_base_of, write_version
from models.train.enrolment_base import EnrolmentBase

logger = logging.getLogger(__name__)

MAX_ROUNDS = 5  # consolidations in a row while enrolments keep coming; the next enrolment starts another


@dataclass(frozen=True)
class Consolidated:
    version: str | None  # the version written; None when there was nothing to do, or current went elsewhere
    folded: int  # refinements folded into the nodes
    carried: int  # refinements of enrolments that came meanwhile, carried onto the new version
    refit_s: float
    reason: str


def consolidate(store: Path, *, keep_versions: int | None = None) -> Consolidated:
    """One consolidation of the store's current version (see the module's docstring)."""
    bundle = load_model(store)
    if not bundle.head.refinements:
        return Consolidated(None, 0, 0, 0.0, f"version {bundle.version} has no refinements")
    started = time.monotonic()
    base, choices = base_of(bundle)
    refitted = refit_for_enrolment(bundle, base, choices, bundle.catalog, stored_gallery(bundle))
    refit_s = time.monotonic() - started
    with store_lock(store):
        latest = load_model(store)
        later = later_refinements(bundle.head, latest.head)
        if later is None or latest.manifest.get("choices") != bundle.manifest.get("choices"):
            reason = f"current moved from {bundle.version} to {latest.version}, which is not built on it"
            logger.info("consolidation of %s dropped: %s", bundle.version, reason)
            return Consolidated(None, 0, 0, refit_s, reason)
        path = _write(store, latest, _carried(refitted, latest, later), bundle.version)
        if keep_versions is not None:
            prune(store, keep_versions, locked=True)
    folded = len(bundle.head.refinements)
    logger.info(
        "consolidated %d refinement(s) of %s into version %s in %.1f s (%d carried over)",
        folded,
        bundle.version,
        path.name,
        refit_s,
        len(later),
    )
    return Consolidated(path.name, folded, len(later), refit_s, "consolidated")


def consolidate_all(store: Path, *, keep_versions: int | None = None) -> list[Consolidated]:
    """Consolidations until current has no refinement left (at most MAX_ROUNDS), or one writes nothing."""
    done: list[Consolidated] = []
    for _ in range(MAX_ROUNDS):
        outcome = consolidate(store, keep_versions=keep_versions)
        done.append(outcome)
        if outcome.version is None or outcome.carried == 0:
            break
    return done


def later_refinements(refitted: ProductHead, latest: ProductHead) -> tuple[Refinement, ...] | None:
    """The refinements `latest` has beyond those of `refitted` (which it must start with); None when it is not
    built on it."""
    mine = [refinement.source for refinement in refitted.refinements]
    theirs = [refinement.source for refinement in latest.refinements]
    if theirs[: len(mine)] != mine or latest.base_products != refitted.base_products:
        return None
    return latest.refinements[len(mine) :]


def _carried(refitted: Refitted, latest: ModelBundle, later: tuple[Refinement, ...]) -> Refitted:
    """The refitted head with the later refinements on it, and the latest gallery."""
    head = refitted.head
    for refinement in later:
        head = head.refined_by(refinement, latest.head.categories[latest.head.products.index(refinement.product)])
    report = {**refitted.report, "refinements_carried": [refinement.product for refinement in later]}
    return Refitted(head, refitted.novelty, stored_gallery(latest), report)


def _write(store: Path, latest: ModelBundle, refitted: Refitted, consolidates: str) -> Path:
    stored, choices = stored_base_of(latest)
    rows = EnrolmentBase.from_columns(stored.used(), "the latest base")
    summary = {
        "consolidates": consolidates,
        "base_version": latest.version,
        "trained_version": choices.trained_version,
        "refinements_carried": len(refitted.head.refinements),
    }
    catalog = dict(latest.catalog)
    return write_version(store, latest, (rows, stored), choices, refitted, catalog, summary, kind="consolidation")
