"""Carrying out stored enrolment requests: once each, the photos of one product that arrived together as one version.

`run_request` takes the store's lock, reads the request's status (one done or failed is not run again; one whose
version exists already, written by a process that died before recording it, is finished), and with `coalesce`
takes the other requests of the same product still queued along: their photos become one version, and every one
of them is recorded done with it (`with`: the others). When the photos together fail on one photo (it cannot be
decoded, say), the request that brought it is recorded failed and the rest go on together; a failure that names
no photo runs the request alone and puts the others back in the queue for their own tasks. After a version is
written the store is pruned (models.store.retention).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.bundle import ModelBundle
from models.errors import ArtifactError, EnrolmentError, ModelError, RefinementsFull
from models.store.enrolment_requests import BUSY, DONE, FAILED, QUEUED, WAITING_FOR_CONSOLIDATION, EnrolmentStore
from models.store.retention import prune
from models.store.versions import current_version, point_current, read_manifest, store_lock, version_folders
from models.train import enrolment as enrolment_module
from models.train.consolidation import consolidation_running, recorded_progress, refinements_of
from models.train.enrolment import Enrolled, FeaturesOf, enrol

logger = logging.getLogger(__name__)

COALESCE_LOOKBACK_S = 600.0  # queued requests of the product created this long before the one run are taken along


@dataclass(frozen=True)
class RequestOutcome:
    enrolment: str
    product: str
    state: str  # done or failed
    version: str | None
    error: Mapping[str, str] | None
    ran: bool  # False: it had finished before (a redelivered task), nothing was done
    enrolled: Enrolled | None = None
    companions: tuple[str, ...] = ()  # the other requests carried out in the same version


def prune_quietly(store: Path, keep_versions: int) -> None:
    """A prune under the lock the caller holds; a version it cannot remove is logged, never an enrolment's failure."""
    try:
        prune(store, keep_versions, locked=True)
    except (OSError, ArtifactError) as exc:
        logger.warning("could not prune %s after an enrolment (the next one tries again): %s", store, exc)


def made_by(store: Path, enrolment: str) -> str | None:
    """The version this enrolment already wrote, if any (a process that died after `current` moved and before it
    recorded `done`): its manifest names the enrolment, or lists it among those it carried out together."""
    for folder in reversed(version_folders(store)):  # newest first: it is most likely the last one
        try:
            summary = read_manifest(folder).get("enrolment", {})
            if summary.get("enrolment") == enrolment or enrolment in summary.get("with", ()):
                return folder.name
        except (ArtifactError, AttributeError, TypeError):
            continue
    return None


def finish_moving_current(store: Path, written: str) -> None:
    """Point `current` at a version an enrolment wrote before it died, when `current` still names the version it
    was built on (it died between the two); a `current` that moved on since is left alone."""
    base = read_manifest(store / written).get("enrolment", {}).get("base_version")
    if current_version(store) == base:
        point_current(store, written)


def run_request(
    store: Path,
    enrolment: str,
    features_of: FeaturesOf,
    *,
    wait_s: float | None = None,
    keep_versions: int | None = None,
    coalesce: bool = False,
    on_served: Callable[[str], None] | None = None,
    loaded: Callable[[], ModelBundle | None] | None = None,
    fail_when_full: bool = False,
) -> RequestOutcome:
    """Carry out a stored enrolment request and record how it went; one already done or failed is not run again.

    `wait_s`: how long to wait for the store's lock (None: its default); StoreBusy after that, with the request
    untouched (the caller tries again later), as when the head is full of quick enrolments that a running
    consolidation folds in (RefinementsFull). `keep_versions`: prune the store after a version is written, keeping
    this many newest (None: no prune). `coalesce`: take the product's other queued requests along, into the same
    version. `on_served(version)`: called as soon as `current` names the version written, before the look-alike
    check, the records and the prune (a worker reloads and tells the others there); an exception it raises is logged,
    never the enrolment's failure. `loaded()`: the version this process serves, built on when it is still current
    (models.train.enrolment.enrol). `fail_when_full`: RefinementsFull is recorded as the request's failure (code
    `busy`, under the lock, so no worker takes the request along meanwhile) and returned, for a caller that does not
    try again (the command line). Anything but an EnrolmentError is recorded as `internal` and raised again (a bug
    to see in the log)."""
    requests = EnrolmentStore(store)
    request = requests.request(enrolment)
    product = str(request["product"])
    with store_lock(store) if wait_s is None else store_lock(store, timeout_s=wait_s):
        status = requests.get(enrolment)
        if status["state"] in (DONE, FAILED):
            return RequestOutcome(enrolment, product, status["state"], status["version"], status["error"], False)
        written = made_by(store, enrolment)
        if written is not None:
            finish_moving_current(store, written)
            requests.done(enrolment, written, 0.0)
            return RequestOutcome(enrolment, product, DONE, written, None, False)
        try:
            _room_for_a_refinement(store)
        except RefinementsFull as exc:
            if not fail_when_full:
                exc.first_wait = _record_wait(requests, enrolment, exc)
                raise
            requests.failed(enrolment, BUSY, str(exc))
            return RequestOutcome(enrolment, product, FAILED, None, {"code": BUSY, "message": str(exc)}, True)
        since = time.time() - COALESCE_LOOKBACK_S
        batch = [enrolment, *(requests.queued_for(product, since=since, exclude=enrolment) if coalesce else [])]
        served = _quietly(on_served)
        outcome = _carry_out(store, requests, batch, features_of, (served, loaded))
        while outcome.state == FAILED and len(batch) > 1 and outcome.error is not None:
            batch = _without_culprit(requests, batch, outcome.error)
            if enrolment not in batch:
                break  # this request's own photo failed: recorded so; the others wait for their own tasks
            outcome = _carry_out(store, requests, batch, features_of, (served, loaded))
        if outcome.state == DONE and keep_versions is not None:
            prune_quietly(store, keep_versions)
    return outcome


def _record_wait(requests: EnrolmentStore, enrolment: str, full: RefinementsFull) -> bool:
    """Record, under the store's lock (no other worker runs the request meanwhile), that the request waits for the
    running consolidation; True the first time. A store that cannot record it only leaves the device untold."""
    try:
        return requests.waiting(
            enrolment, WAITING_FOR_CONSOLIDATION, str(full), running_s=full.running_s, expected_s=full.expected_s
        )
    except EnrolmentError as exc:
        logger.warning("cannot record that enrolment %s waits: %s", enrolment, exc)
        return False


def _room_for_a_refinement(store: Path) -> None:
    """RefinementsFull when current's head carries MAX_REFINEMENTS quick enrolments while a consolidation runs: the
    enrolment would refit every node itself (as long as the consolidation takes, and under the store's lock) and
    leave that consolidation nothing to write; after it lands, the enrolment is quick again. Without a running
    consolidation (they keep failing) the enrolment refits as it did."""
    count = refinements_of(store)
    if count < enrolment_module.MAX_REFINEMENTS or not consolidation_running(store):
        return
    progress = recorded_progress(store)
    running = "" if progress is None else f" (its round has run {progress.running_s:.0f} s"
    if progress is not None and progress.last_round_s is not None:
        running += f"; the last of its kind took {progress.last_round_s:.0f} s"
    raise RefinementsFull(
        f"the model carries {count} quick enrolments, as many as it may, and a consolidation is folding them "
        f"in{running}{')' if running else ''}: try again when it lands",
        running_s=None if progress is None else round(progress.running_s, 1),
        expected_s=None if progress is None or progress.expected_s is None else round(progress.expected_s, 1),
    )


def _without_culprit(requests: EnrolmentStore, batch: list[str], error: Mapping[str, str]) -> list[str]:
    """After the photos of `batch` failed together: the request whose photo the error names stays failed and the
    rest go back to the queue and on together; when the error names no photo, the first request goes on alone."""
    message = str(error.get("message", ""))
    culprit = next((enrolment for enrolment in batch if f"photo {enrolment}/" in message), None)
    rest = [enrolment for enrolment in batch if enrolment != culprit] if culprit is not None else batch[:1]
    for enrolment in batch:
        if enrolment != culprit:
            requests.set_state(enrolment, QUEUED)
    logger.info(
        "enrolling %d request(s) together failed (%s); %s",
        len(batch),
        message,
        f"{culprit} stays failed, the rest go on" if culprit else f"{batch[0]} goes on alone",
    )
    return rest


def _quietly(on_served: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """`on_served` with what it raises logged: the version is written and current whatever the callback does."""
    if on_served is None:
        return None

    def call(version: str) -> None:
        try:
            on_served(version)
        except Exception:
            logger.exception("serving version %s at once failed; workers find it at their next poll", version)

    return call


def _carry_out(
    store: Path,
    requests: EnrolmentStore,
    batch: list[str],
    features_of: FeaturesOf,
    hooks: tuple[Callable[[str], None] | None, Callable[[], ModelBundle | None] | None] = (None, None),
) -> RequestOutcome:
    """Enrol the photos of every request in `batch` (one product; the first is the one run) as one version;
    `hooks`: run_request's on_served and loaded."""
    lead, others = batch[0], tuple(batch[1:])
    loaded = [requests.request(enrolment) for enrolment in batch]
    product = str(loaded[0]["product"])
    records = [r["record"] for r in sorted(loaded, key=lambda r: str(r["id"])) if r.get("record") is not None]
    photos = [(f"{enrolment}/{name}", data) for enrolment in batch for name, data in requests.photos(enrolment)]
    for enrolment in batch:
        requests.running(enrolment)
    details: dict[str, Any] = {"enrolment": lead, "source": loaded[0].get("source")}
    if others:
        details["with"] = list(others)
    try:
        enrolled = enrol(
            store,
            product,
            photos,
            record=records[-1] if records else None,  # the newest record given wins (ids sort by creation time)
            features_of=features_of,
            photo_prefix="enrolments",
            details=details,
            locked=True,
            on_served=hooks[0],
            loaded=hooks[1],
        )
    except EnrolmentError as exc:
        error = {"code": exc.code, "message": exc.message}
        for enrolment in batch:
            requests.failed(enrolment, exc.code, exc.message)
        return RequestOutcome(lead, product, FAILED, None, error, True, companions=others)
    except Exception as exc:
        message = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
        for enrolment in batch:
            requests.failed(enrolment, "internal", message)
        raise
    for enrolment in batch:
        together = [other for other in batch if other != enrolment]
        recorded: dict[str, Any] = {"confusable_with": [dict(c) for c in enrolled.confusable_with]}
        if together:
            recorded["with"] = together
        requests.done(enrolment, enrolled.version, enrolled.seconds, **recorded)
    return RequestOutcome(lead, product, DONE, enrolled.version, None, True, enrolled, others)
