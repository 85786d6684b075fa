"""Consolidation: the refinements quick enrolments left on the head folded into its nodes by a full refit.

It fits the head again on the current version's rows as training does (models.train.head_fitting.fit_model: every
node's classifier chosen by cross-validation, the novelty score and the thresholds calibrated on leave-products-out
folds), from the stored features, without a photo or the backbone, and without holding the store's lock, so
enrolments go on meanwhile. The feature recipe and the synthetic copies stay the last training's (a round that
searches re-centres the rows on their photos' mean once enrolments moved it: models.train.recentring), and so does the
head's structure while the catalog stays near the size it was chosen at (structure_to_fit); the nodes' fits start
from the version's. Then, under the lock, it takes `current` as it finds it: when that is the version it refitted,
or one built on it by quick enrolments only (its refinements start with the refitted version's), the new version is
the refitted head plus the refinements of the enrolments that came meanwhile, over the newest rows, gallery and
catalog, verified and made current like any version. When `current` went elsewhere (a training, an activation,
another consolidation), nothing is written. `consolidate_all` runs until no refinement is left.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.answer.classifiers import KINDS, PREPROCESSING
from models.answer.head import FLAT, ProductHead
from models.answer.novelty import NoveltyModel
from models.answer.photo_index import PhotoIndex
from models.answer.refinements import Refinement
from models.answer.row_shards import StoredRows
from models.bundle import ModelBundle, load_model, stored_gallery
from models.errors import ArtifactError, ConsolidationBusy, EnrolmentError, InvalidModel, TrainingError
from models.store.retention import prune
from models.store.versions import read_manifest, resolve, store_lock
from models.train import enrolment as enrolment_module
from models.train.enrolment import Refitted, base_of, refit_for_enrolment, stored_base_of, write_version
from models.train.enrolment_base import Choices, EnrolmentBase
from models.train.head_fitting import AUTO, FLAT_UP_TO_PRODUCTS, Search, fit_searched, search_for
from models.train.recentring import RECENTRE_PAST, Recentring, mean_moved, recentring, rows_mean

logger = logging.getLogger(__name__)

BURST_CARRIED = 8  # a round that carried this many enrolments that came meanwhile is followed by a quick one
MAX_DROPPED = 3  # rounds in a row that wrote nothing (current kept moving elsewhere): the consolidation stops
MAX_ROUNDS_S = 1800.0  # past this, rounds stop once current's head has room (consolidate_all; the next child goes on)
MAX_RUN_S = 7200.0  # past this, rounds stop in any case: well within the worker's 4 h for a child
LOCK_FILE = ".consolidating"
PROGRESS_FILE = ".consolidating.json"  # when the running round began, its kind, the last round of each kind's s
LOCK_TRIES, LOCK_RETRY_S = 5, 0.05  # a lock file held by another process's look is free again in microseconds
BUSY_EXIT = 75  # EX_TEMPFAIL: `partsight models --consolidate` found another process consolidating the store


@dataclass(frozen=True)
class Consolidated:
    version: str | None  # the version written; None when there was nothing to do, or current went elsewhere
    folded: int  # refinements folded into the nodes
    carried: int  # refinements of enrolments that came meanwhile, carried onto the new version
    refit_s: float
    reason: str
    searched: bool = True  # the classifiers chosen again by cross-validation (False: a quick round, the last ones)


def consolidate(
    store: Path, *, keep_versions: int | None = None, search: bool = True, force: bool = False
) -> Consolidated:
    """One consolidation of the store's current version (see the module's docstring). `search` False: a quick
    round in the head's own structure, every node refitted with the classifier the version's choices name for it,
    as an enrolment's refit does (while enrolments keep coming: consolidate_all). `force`: a round on a version
    without refinements too (the classifiers chosen again after a burst's quick rounds)."""
    bundle = load_model(store)
    if not bundle.head.refinements and not force:
        return Consolidated(None, 0, 0, 0.0, f"version {bundle.version} has no refinements")
    started = time.monotonic()
    base, trained = base_of(bundle)
    mean = rows_mean(bundle, base)
    moved = centre_moved(bundle, mean)
    # a quick round keeps the mean, and so does a round that cannot cross-validate or keeps a tuned training's
    # novelty score (both keep the score, whose similarity inputs re-centring would move)
    recentre = search and cross_validated(base) and not trained.novelty_kept
    centring = recentring(bundle, mean) if recentre else None
    if centring is not None:
        base = centring.base(base)
    refitted, choices = refit_whole(bundle, base, trained, search=search, centring=centring)
    del base  # every row, float32: not held beside the rows written under the lock
    search = bool(refitted.report.get("classifiers_searched", True))
    refitted.report.update({**moved, "recentred": centring is not None})
    refit_s = time.monotonic() - started
    with store_lock(store):
        latest = load_model(store)
        later = later_refinements(bundle.head, latest.head)
        if later is None or _trained_version(latest) != choices.trained_version:
            reason = f"current moved from {bundle.version} to {latest.version}, which is not built on it"
            logger.info("consolidation of %s dropped: %s", bundle.version, reason)
            return Consolidated(None, 0, 0, refit_s, reason, search)
        stored, _ = stored_base_of(latest)
        if centring is not None:  # the rows of the enrolments that came meanwhile too, and their refinements
            stored = centring.stored(stored)
            later = centring.refinements(later, stored, choices.seed)
        carried = _carried(refitted, latest, later, centring)
        path = _write(store, latest, stored, carried, bundle.version, choices, searched=search, centring=centring)
        if keep_versions is not None:
            prune(store, keep_versions, locked=True)
    warn_if_centre_moved(moved, centring)
    folded = len(bundle.head.refinements)
    logger.info(
        "consolidated %d refinement(s) of %s into version %s in %.1f s (%d carried over; %s)",
        folded,
        bundle.version,
        path.name,
        refit_s,
        len(later),
        "classifiers chosen again" if search else "a quick round: the classifiers kept",
    )
    return Consolidated(path.name, folded, len(later), refit_s, "consolidated", search)


def consolidate_all(store: Path, *, keep_versions: int | None = None) -> list[Consolidated]:
    """Consolidations until current has no refinement left (enrolments that came during the last round are folded
    by another), also after a round that wrote nothing because current went elsewhere (an enrolment that refitted
    whole): the next round starts from that.

    The first round chooses the classifiers again by cross-validation. While enrolments keep coming (the last round
    carried BURST_CARRIED of them, or the head is half full) a round is quick: the head's structure kept (but a
    flat one past FLAT_UP_TO_PRODUCTS), every node refitted with the classifier the version names for it (an
    enrolment's refit), so that a burst's enrolments seldom find the head full and wait for a round that searches.
    A round that starts once they slow down searches again, and when the last round was quick, one more round
    searches with nothing to fold.

    Past MAX_ROUNDS_S it stops once current has room for as many quick enrolments again (at most half of
    MAX_REFINEMENTS held), past MAX_RUN_S in any case (the worker sends another), and after MAX_DROPPED rounds in a
    row that wrote nothing. A consolidation that left with a nearly full head made the enrolments of a burst find
    none running and refit every node themselves, which dropped the round they raced: at 300 parts, every exit of
    the child cost an enrolment 6-22 s and a round. ConsolidationBusy when another process consolidates the store
    (its rounds take these enrolments along)."""
    done: list[Consolidated] = []
    started = time.monotonic()
    with consolidating(store):
        held = refinements_of(store)
        while True:
            burst = bool(done) and (done[-1].carried >= BURST_CARRIED or held >= enrolment_module.MAX_REFINEMENTS // 2)
            done.append(_timed_round(store, keep_versions, search=not burst))
            held, elapsed = refinements_of(store), time.monotonic() - started
            if held == 0 and burst and done[-1].version is not None:  # the burst ended on a quick round
                done.append(_timed_round(store, keep_versions, search=True, force=True))
                held = refinements_of(store)
            if held == 0 or elapsed >= MAX_RUN_S:
                break
            if elapsed >= MAX_ROUNDS_S and held <= enrolment_module.MAX_REFINEMENTS // 2:
                break
            if len(done) >= MAX_DROPPED and all(round_.version is None for round_ in done[-MAX_DROPPED:]):
                logger.warning("%d consolidation rounds in a row wrote nothing: current keeps moving", MAX_DROPPED)
                break
    return done


def _timed_round(store: Path, keep_versions: int | None, *, search: bool, force: bool = False) -> Consolidated:
    """One round, its start and its seconds recorded for the enrolments that wait for it (a round that found nothing
    to refit leaves the last estimate; one that raised leaves no start behind)."""
    began = time.time()
    record_progress(store, began, search=search)
    refitted = False
    try:
        outcome = consolidate(store, keep_versions=keep_versions, search=search, force=force)
        refitted = outcome.refit_s > 0
    finally:
        record_progress(store, None, search=search, last_round_s=time.time() - began if refitted else None)
    return outcome


def refinements_of(store: Path) -> int:
    """How many quick enrolments current's head holds (0 for a store without a readable current)."""
    try:
        manifest = read_manifest(resolve(store))
    except (ArtifactError, OSError):
        return 0
    head = manifest.get("head")
    refinements = head.get("refinements", []) if isinstance(head, Mapping) else []
    return len(refinements) if isinstance(refinements, list) else 0


@dataclass(frozen=True)
class ConsolidationProgress:
    """How far the running consolidation's round has got, as an enrolment that waits for it tells its device."""

    running_s: float  # since its round began
    last_round_s: float | None  # the last round of its kind on this store (None: none recorded)

    @property
    def expected_s(self) -> float | None:
        """Seconds until it lands, if it takes as long as the last round of its kind (0 when it is running late)."""
        return None if self.last_round_s is None else max(0.0, self.last_round_s - self.running_s)


def recorded_progress(store: Path) -> ConsolidationProgress | None:
    """The round a consolidation recorded as running (record_progress), with the seconds of the last round of its
    kind; None when none is, or nothing was recorded. The caller knows that one runs (consolidation_running): a
    child killed mid-round leaves its start behind."""
    try:
        recorded = json.loads((store / PROGRESS_FILE).read_text(encoding="utf-8"))
        began = recorded["round_started_at"]
        if began is None:
            return None
        last = recorded["last_round_s"].get(_kind(bool(recorded.get("search", True))))
        return ConsolidationProgress(
            max(0.0, time.time() - float(began)), None if last is None else max(0.0, float(last))
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):  # none, or not ours
        return None


def record_progress(
    store: Path, round_started_at: float | None, *, search: bool = True, last_round_s: float | None = None
) -> None:
    """Note that a round began (`round_started_at`, a Unix time) or ended (None), and how long it took
    (`last_round_s`; None keeps the one recorded), for its kind (`search`: one that chooses the classifiers again,
    else a quick one): what recorded_progress reads. A store that cannot be written here only loses the estimate."""
    path = store / PROGRESS_FILE
    try:
        lasts = dict(json.loads(path.read_text(encoding="utf-8"))["last_round_s"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):  # none yet, or not ours
        lasts = {}
    if last_round_s is not None:
        lasts[_kind(search)] = round(last_round_s, 3)
    staged = path.with_name(f"{PROGRESS_FILE}.{os.getpid()}")
    try:
        staged.write_text(
            json.dumps({"round_started_at": round_started_at, "search": search, "last_round_s": lasts}),
            encoding="utf-8",
        )
        os.replace(staged, path)
    except OSError as exc:
        logger.warning("could not record the consolidation's progress in %s: %s", path, exc)


def _kind(search: bool) -> str:
    return "search" if search else "quick"


def consolidation_running(store: Path) -> bool:
    """Whether a process on this machine consolidates the store now (holds its lock file); waits at most 0.2 s."""
    try:
        with consolidating(store):
            return False
    except ConsolidationBusy:
        return True
    except OSError:  # the lock file cannot be opened (a read-only store): nothing consolidates it from here
        return False


@contextmanager
def consolidating(store: Path) -> Iterator[None]:
    """One consolidation a store at a time, across processes on this machine (a lock file, never waited for, but for
    a moment: consolidation_running holds it a few microseconds to look); on a shared volume two machines may both
    refit, and the second to write finds current moved and drops its own."""
    with (store / LOCK_FILE).open("a") as handle:
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if attempt == LOCK_TRIES - 1:
                    raise ConsolidationBusy(f"another process is consolidating {store}") from exc
                time.sleep(LOCK_RETRY_S)
        yield


def refit_whole(
    bundle: ModelBundle,
    base: EnrolmentBase,
    choices: Choices,
    *,
    search: bool = True,
    centring: Recentring | None = None,
) -> tuple[Refitted, Choices]:
    """The head fitted again on `base` as training fits it, and the choices to record with it (the structure
    chosen again, where it was: structure_to_fit). With a product of a single photo the rows cannot be
    cross-validated, and with `search` False nothing is chosen again: every node is then refitted with the
    classifier the last training chose, and the novelty score calibrated on the products with two photos or more
    (or kept), as an enrolment's refit does. `centring`: the caller re-centred `base` (models.train.recentring);
    the gallery is re-centred here, its photo index built anew. Where the choices keep the training's novelty
    score (`novelty_kept`: a tuned backbone's), it is kept with the head's thresholds, and no folds are run for it.

    Where the head keeps its structure (or cross-validation chooses it again), each node's logistic regression
    starts from the version's (fit_nodes): at 1,010 look-alike parts the final fits took 87 s instead of 161 s, to
    the solver's tolerance."""
    gallery = stored_gallery(bundle)  # now: a prune may remove this version while the refit runs
    if gallery is not None and centring is not None:
        gallery = centring.gallery(gallery)
    if gallery is not None:  # its photo index gains the photos enrolled since, outside the lock, on every core
        gallery = gallery.with_index(threads=os.cpu_count() or 1)
    categories_of = {p: str(bundle.catalog[p]["category"]) for p in set(base.products.tolist())}
    quick = not search and not (bundle.head.structure == FLAT and len(categories_of) > FLAT_UP_TO_PRODUCTS)
    if quick or not cross_validated(base):
        # the head's own structure (refit_for_enrolment), each node with the classifier the choices name for it,
        # else the default
        refitted = refit_for_enrolment(bundle, base, choices, bundle.catalog, gallery)
        refitted.report["classifiers_searched"] = False
        return refitted, choices
    structure = structure_to_fit(choices, len(categories_of), bundle.head.structure)
    settings, keep = _novelty_settings(bundle, choices)
    try:
        fitted = fit_searched(
            settings,
            base.features,
            base.products.astype(str).tolist(),
            base.groups,
            base.synthetic,
            categories_of,
            structure=structure,
            search=search_of(choices, len(categories_of)),
            start=bundle.head,
            photo_keys=base.sha256,  # the folds a training of the same photos makes (canonical_order)
        )
    except (TrainingError, InvalidModel) as exc:
        raise EnrolmentError(f"the head cannot be fitted on the rows: {exc}", "refit_failed") from exc
    if structure == AUTO and fitted.head.structure == choices.structure:  # chosen again: the next ones keep it
        choices = replace(choices, structure_for=len(categories_of), head_structure_for=None)
    elif structure == AUTO:  # another structure than the training's, whose classifiers (by node) enrolments refit
        choices = replace(choices, head_structure_for=len(categories_of))  # the next rounds keep it too
        why = fitted.report.get("structure_why", "")
        fitted.report["structure_why"] = f"chosen again ({why}); {choices.structure} kept for enrolments' refits"
    else:
        fitted.report["structure_why"] = f"kept: {structure_why(choices, structure)}"
    if keep is not None:
        fitted.report["novelty_kept"] = choices.novelty_kept
    return Refitted(fitted.head, keep or fitted.novelty, gallery, fitted.report), choices


def _novelty_settings(bundle: ModelBundle, choices: Choices) -> tuple[Choices, NoveltyModel | None]:
    """The settings a searching round fits with, and the novelty score it keeps (None: it calibrates one): a tuned
    training's score (`novelty_kept`) is kept with the head's thresholds, and no folds are run for it."""
    if not choices.novelty_kept or bundle.novelty is None:
        return choices, None
    head = bundle.head
    kept = replace(
        choices,
        refuse_unseen=None,
        product_threshold=head.product_threshold,
        category_threshold=head.category_threshold,
    )
    return kept, bundle.novelty


def cross_validated(base: EnrolmentBase) -> bool:
    """Whether a round can choose classifiers on `base`: every product has two real photos or more."""
    _, photos = np.unique(base.products[~base.synthetic], return_counts=True)
    return bool(photos.min() >= 2)


def centre_moved(bundle: ModelBundle, mean: np.ndarray | None) -> dict[str, float]:
    """The report's `feature_centre_moved` (nothing for a recipe that does not centre): how far `mean`, the mean of
    the base's real rows before centring (the training's photos, at most its per-product cap of them, and those
    enrolled since: models.train.recentring.rows_mean), lies from the mean the version's rows are centred on: the
    training's, fitted on all its photos, until a round that searches re-centres them (models.train.recentring).
    Products of another kind moved it 0.35 (the digits enrolled onto Fashion-MNIST), new variants of trained
    families 0.003 at 1,020 parts."""
    moved = mean_moved(bundle, mean)
    return {} if moved is None else {"feature_centre_moved": round(moved, 4)}


def warn_if_centre_moved(moved: Mapping[str, float], centring: Recentring | None) -> None:
    """Says that the round re-centred the rows, or warns when the mean moved past RECENTRE_PAST and this
    round (a quick one) kept it: the next round that chooses the classifiers again re-centres them."""
    shift = moved.get("feature_centre_moved", 0.0)
    if centring is not None:
        logger.info(
            "the products enrolled since moved the features' mean by %.2f: rows re-centred on it (a training, "
            "`partsight train`, would also choose the feature recipe again on every product)",
            shift,
        )
    elif shift > RECENTRE_PAST:
        logger.warning(
            "the products enrolled since moved the features' mean by %.2f (past %.2f); this quick round kept it, "
            "the next consolidation round that chooses the classifiers again re-centres the rows on it",
            shift,
            RECENTRE_PAST,
        )


STRUCTURE_KEPT_WITHIN = 1.5  # a consolidation keeps the structure chosen at n products while it has n/1.5 to 1.5n


def structure_to_fit(choices: Choices, products: int, head: str | None = None) -> str:
    """The structure a consolidation fits over `products` products: the one the operator named; the one
    cross-validation chose, while the catalog has not grown or shrunk past STRUCTURE_KEPT_WITHIN times the size it
    was chosen at; else AUTO, chosen again as training chooses it (choose_structure: 68 s of a 371-s consolidation
    at 1,003 parts, 60 s of a 139-s one at 420). `head`: the version's head's structure, which a consolidation may
    have chosen instead of the training's (`head_structure_for`): kept the same way. A flat head past
    FLAT_UP_TO_PRODUCTS is AUTO whoever chose it: it would not fit in memory. A structure chosen again is recorded
    as the choices' `structure_for` only where it is the training's (refit_whole): the choices' classifiers are the
    training's nodes', which an enrolment's refit takes (models.train.enrolment.refit)."""
    named = choices.structure_for == 0  # by the operator, at training: kept for good
    if head is None or head == choices.structure or named:
        kept, chosen_at = choices.structure, choices.structure_for
    else:  # chosen by a consolidation instead of the training's
        kept, chosen_at = head, choices.head_structure_for
    if kept == FLAT and products > FLAT_UP_TO_PRODUCTS:
        return AUTO
    if named:
        return kept
    return kept if chosen_at and _near(chosen_at, products) else AUTO


def _near(chosen_at: int, products: int) -> bool:
    return chosen_at / STRUCTURE_KEPT_WITHIN <= products <= chosen_at * STRUCTURE_KEPT_WITHIN


def structure_why(choices: Choices, structure: str) -> str:
    """Why the structure a consolidation kept is the one it is (for its report)."""
    if structure != choices.structure:
        return f"chosen again by cross-validation at {choices.head_structure_for} products"
    if choices.structure_for == 0:
        return "named by the operator at training"
    return f"chosen by cross-validation at {choices.structure_for} products"


def search_of(choices: Choices, products: int) -> Search:
    """The kinds and preprocessing a consolidation of `products` products searches: those the last training chose
    for some node, and those a training of `products` products would search (search_for, with what the operator
    named for the last training); their parameters and temperatures are chosen again.

    Up to SEARCH_EVERY_KIND_UP_TO products that is every kind, as a training searches, so a consolidation whose
    recipe stays makes the choices a training of the same photos makes: narrowed to the kinds a training of 8
    products had chosen, a round chose logistic regression with PCA where a retrain of the same 18 products chose it
    with standardisation, and refused 2 points more never-seen frames (86.5 against 84.5%, one split). Past it,
    logistic regression alone and the kinds chosen, a fraction of a training's search. Choices
    that do not record what was named (written before) search the kinds chosen and logistic regression."""
    chosen = [candidate for candidate, _ in choices.classifiers.values()]
    if choices.search_named is None:
        usual: tuple[tuple[str, ...], tuple[str, ...], str] = (("logistic",), ("none",), "logistic regression")
    else:
        kinds, steps, why = search_for(products, *choices.search_named)
        usual = kinds, steps, f"what a training of {products} products searches ({why})"
    kinds = tuple(kind for kind in KINDS if kind in usual[0] or kind in {c.kind for c in chosen})
    steps = tuple(step for step in PREPROCESSING if step in usual[1] or step in {c.preprocessing for c in chosen})
    return kinds, steps, f"the kinds and preprocessing the last training chose, and {usual[2]}"


def later_refinements(refitted: ProductHead, latest: ProductHead) -> tuple[Refinement, ...] | None:
    """The refinements `latest` has beyond those of `refitted` (which it must start with); None when it is not
    built on it."""
    mine = [refinement.source for refinement in refitted.refinements]
    theirs = [refinement.source for refinement in latest.refinements]
    if theirs[: len(mine)] != mine or latest.base_products != refitted.base_products:
        return None
    return latest.refinements[len(mine) :]


def _carried(
    refitted: Refitted, latest: ModelBundle, later: tuple[Refinement, ...], centring: Recentring | None
) -> Refitted:
    """The refitted head with the later refinements on it, and the latest gallery (re-centred with `centring`)."""
    head = refitted.head
    for refinement in later:
        head = head.refined_by(refinement, latest.head.categories[latest.head.products.index(refinement.product)])
    report = {**refitted.report, "refinements_carried": [refinement.product for refinement in later]}
    gallery = stored_gallery(latest)
    if gallery is not None and centring is not None:
        gallery = centring.gallery(gallery)
    if gallery is not None and refitted.gallery is not None and isinstance(refitted.gallery.index, PhotoIndex):
        gallery = replace(gallery, index=refitted.gallery.index)  # extended outside the lock
    if gallery is not None:  # and the photos of the enrolments that came meanwhile
        gallery = gallery.with_index()
    return Refitted(head, refitted.novelty, gallery, report)


def _trained_version(bundle: ModelBundle) -> str | None:
    record = bundle.manifest.get("choices")
    return Choices.from_record(record).trained_version if isinstance(record, dict) else None


def _write(  # noqa: PLR0917
    store: Path,
    latest: ModelBundle,
    stored: StoredRows,
    refitted: Refitted,
    consolidates: str,
    choices: Choices,
    *,
    searched: bool,
    centring: Recentring | None,
) -> Path:
    summary = {
        "consolidates": consolidates,
        "base_version": latest.version,
        "trained_version": choices.trained_version,
        "refinements_carried": len(refitted.head.refinements),
        "classifiers_searched": searched,
        **({"recentred": {"moved": round(centring.moved, 4)}} if centring is not None else {}),
    }
    catalog = dict(latest.catalog)
    centers = None if centring is None else centring.centers
    return write_version(
        store, latest, stored, choices, refitted, catalog, summary, kind="consolidation", centers=centers
    )
