"""The worker's side of an enrolment: run one `partsight.enrol` task, record how it went, tell everyone.

A task names a request the API or `partsight enrol` stored (`{"enrolment": ID}`), or carries an MQTT device's
photo (`{"device", "frame_id", "product", "catalog", "photo", "received_at"}`), which is stored here as a request
under an id derived from the device and frame id, so a redelivered task finds it again. Under the store's lock the
request's status is read first: one already done or failed is not run twice (a task redelivered while another
worker ran it, or after this one died past the end). Then models.train.enrolment builds and writes the version,
`current` moves, the worker swaps it in at once, and MODEL_CHANNEL tells every other worker to do the same.
A device that enrolled over MQTT gets the outcome on its result topic (a failure on its error topic, with a code).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from broker.codes import ErrorCode
from broker.contract import SCHEMA_VERSION, error_message, rfc3339
from broker.topics import Topics
from models.bundle import ModelBundle
from models.errors import EnrolmentError, ImageError, RefinementsFull, StoreBusy, UnknownEnrolment
from models.store.enrolment_requests import (
    DONE,
    FAILED,
    QUEUED,
    STORE_UNAVAILABLE,
    WAITING,
    WAITING_FOR_CONSOLIDATION,
    EnrolmentStore,
)
from models.train.enrolment import photo_features
from models.train.enrolment_runs import run_request
from worker.errors import EnrolmentBusy, MalformedTask
from worker.metrics import WorkerMetrics
from worker.pipeline import ServedModel

logger = logging.getLogger(__name__)

INTERNAL = "internal"  # the code of an enrolment that failed on something other than its request
LOCK_WAIT_S = 1.0  # an enrolment waits this long for another process's; then its task is tried again later
WAIT_RETRY_S = (2.0, 10.0)  # a request waiting for a consolidation comes back when it should land, within these


def waiting_retry_s(expected_s: float | None) -> float:
    """Seconds until a request that waits for a consolidation is tried again: until the round should land, but no
    fewer than WAIT_RETRY_S[0] (the round is late) and no more than WAIT_RETRY_S[1] (it may land early). Hundreds of
    queued requests each trying every 2 s for minutes would take the store's lock for nothing."""
    low, high = WAIT_RETRY_S
    return high if expected_s is None else min(high, max(low, expected_s))


@dataclass(frozen=True)
class Outcome:
    enrolment: str
    state: str  # done or failed
    version: str | None
    product: str
    error: Mapping[str, str] | None
    seconds: float
    ran: bool  # False when the request had already finished (a redelivered task)
    companions: tuple[str, ...] = ()  # the other requests of the product carried out in the same version
    confusable_with: tuple[Mapping[str, Any], ...] = ()  # look-alikes its photos were answered as (> 10%)


class EnrolmentRunner:
    def __init__(
        self,
        store: Path,
        *,
        served: Callable[[], ServedModel],
        load: Callable[[Path], ServedModel],
        metrics: WorkerMetrics,
        announce: Callable[[str, str], None],
        reload_now: Callable[[], object],
        publish: Callable[[str, bytes], object],
        topics: Topics,
        batch: int = 16,
        keep_versions: int | None = None,
        window_s: float = 0.0,
    ) -> None:
        """`served`: the model frames use now; `load`: a version's model (for a version not served here);
        `announce(version, reason)`: publish on MODEL_CHANNEL; `reload_now`: this worker's reloader check;
        `publish(topic, payload)`: an answer to an MQTT device; `batch`: photos per engine call; `keep_versions`:
        the newest versions a prune after each enrolment keeps (None: no prune); `window_s`: how long after a
        request was made its enrolment waits for more photos of the product (they become one version).

        An enrolment that cannot start at once (this process runs one already, another process holds the store,
        the store cannot be written just now) raises EnrolmentBusy: the task is tried again a little later and
        its thread goes back to the frames meanwhile."""
        self.store = store
        self.requests = EnrolmentStore(store)
        self._served, self._load = served, load
        self._metrics = metrics
        self._announce, self._reload_now, self._publish = announce, reload_now, publish
        self._topics = topics
        self._keep_versions = keep_versions
        self._window_s = window_s
        self._loaded: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._running = threading.Semaphore(1)  # one enrolment a process: the others give their thread back
        self._batch = batch

    def handle(self, kwargs: Mapping[str, Any]) -> Outcome:
        """Run the task; MalformedTask if it fits neither form. Every device that asked for one of the requests
        it carried out (or found done and not yet answered: a worker died between the two) is answered."""
        asked_by = None
        if "enrolment" in kwargs:
            enrolment = kwargs["enrolment"]
            if not isinstance(enrolment, str):
                raise MalformedTask("an enrolment task's 'enrolment' must be an id")
        else:
            enrolment = self._store_device_request(kwargs)
            asked_by = (str(kwargs["device"]), str(kwargs["frame_id"]))  # for a request stored before replies
        try:
            status = self.requests.get(enrolment)
        except UnknownEnrolment as exc:
            raise MalformedTask(f"enrolment {enrolment!r} is not in {self.requests.root}: {exc}") from exc
        except EnrolmentError as exc:  # the store cannot be read just now (or holds a corrupt request)
            raise EnrolmentBusy(f"cannot read enrolment {enrolment}: {exc}") from exc
        if status["state"] == QUEUED:
            self._wait_for_more_photos(status["created_at"])
        if not self._running.acquire(blocking=False):
            raise EnrolmentBusy("this worker is running another enrolment")
        try:
            outcome = self._run(enrolment, asked_by)
        finally:
            self._running.release()
        self._answer_request(enrolment, asked_by)
        for request in outcome.companions:
            self._answer_request(request, None)
        return outcome

    def _wait_for_more_photos(self, created_at: str) -> None:
        """Photos of one product that arrive within the window become one version: a request younger than the
        window gives its thread back and comes again when it is old enough (EnrolmentBusy with that delay)."""
        try:
            created = datetime.fromisoformat(created_at).timestamp()
        except (TypeError, ValueError):
            return
        remaining = created + self._window_s - time.time()
        if 0 < remaining <= self._window_s:
            raise EnrolmentBusy(f"waiting {remaining:.1f} s for more photos of the product", retry_in_s=remaining)

    def _answer_request(self, enrolment: str, asked_by: tuple[str, str] | None) -> None:
        """Tell the MQTT device that asked for `enrolment` (if one did) how it went, once it was carried out; the
        request records that it was told only when the broker took the answer."""
        try:
            asked_by = _who_asked(self.requests.request(enrolment), asked_by)
            if self.requests.is_answered(enrolment):
                return
            status = self.requests.get(enrolment)
        except EnrolmentError as exc:
            logger.warning("cannot read enrolment %s to answer its device: %s", enrolment, exc)
            return
        if asked_by is None or status["state"] not in (DONE, FAILED):
            return  # asked by no device, or put back in the queue (its photos with others failed): not yet
        own = Outcome(
            enrolment,
            status["state"],
            status["version"],
            status["product"],
            status["error"],
            0.0,
            True,
            confusable_with=tuple(status.get("confusable_with") or ()),
        )
        if not self._answer_device(*asked_by, own):
            return
        try:
            self.requests.answered(enrolment)
        except EnrolmentError as exc:  # answered, but not recorded: a redelivered task answers again
            logger.warning("could not record that enrolment %s was answered: %s", enrolment, exc)

    def _store_device_request(self, kwargs: Mapping[str, Any]) -> str:
        device, frame_id, product = kwargs.get("device"), kwargs.get("frame_id"), kwargs.get("product")
        photo, catalog, received = kwargs.get("photo"), kwargs.get("catalog"), kwargs.get("received_at")
        if not all(isinstance(v, str) for v in (device, frame_id, product)) or not isinstance(photo, bytes):
            raise MalformedTask("an MQTT enrolment needs device, frame_id, product (strings) and photo (bytes)")
        if catalog is not None and not isinstance(catalog, Mapping):
            raise MalformedTask("an MQTT enrolment's catalog must be a mapping")
        at = float(received) if isinstance(received, (int, float)) else time.time()
        assert isinstance(device, str) and isinstance(frame_id, str) and isinstance(product, str)
        record = json.dumps(catalog, sort_keys=True, default=str) if catalog is not None else ""
        key = "\x00".join(("mqtt", device, frame_id, product, hashlib.sha256(photo).hexdigest(), record))
        try:
            enrolment = self.requests.create(
                product,
                [(f"{frame_id}.img", photo)],
                record=catalog,
                source=f"mqtt:{device}",
                at=at,
                key=key,
                reply={"device": device, "frame_id": frame_id},
            )
        except EnrolmentError as exc:  # a bad product id or record: the device hears why, nothing is stored
            if exc.code == STORE_UNAVAILABLE:
                raise EnrolmentBusy(str(exc)) from exc
            self._metrics.enrolments.labels(outcome=FAILED).inc()
            refused = Outcome("", FAILED, None, product, {"code": exc.code, "message": exc.message}, 0.0, True)
            self._answer_device(device, frame_id, refused)
            raise MalformedTask(f"MQTT enrolment from {device} refused: {exc}") from exc
        return enrolment

    def _run(self, enrolment: str, asked_by: tuple[str, str] | None) -> Outcome:
        started = time.monotonic()
        try:
            result = run_request(
                self.store,
                enrolment,
                self._features_of,
                wait_s=LOCK_WAIT_S,
                keep_versions=self._keep_versions,
                coalesce=True,
                on_served=self._serve,  # before the look-alike check: every version written is served there
                loaded=lambda: self._served().bundle,  # built on as it is served, not loaded again
            )
        except RefinementsFull as exc:  # minutes at hundreds of products: the device hears why, once
            self._tell_waiting(enrolment, asked_by, exc)
            raise EnrolmentBusy(str(exc), retry_in_s=waiting_retry_s(exc.expected_s)) from exc
        except StoreBusy as exc:
            raise EnrolmentBusy(str(exc)) from exc
        except Exception:
            logger.exception("enrolment %s failed", enrolment)
            self._metrics.enrolments.labels(outcome=FAILED).inc()
            status = self.requests.get(enrolment)
            return Outcome(enrolment, FAILED, None, status["product"], status["error"], 0.0, True)
        seconds = time.monotonic() - started
        if not result.ran:
            logger.info("enrolment %s already %s: not run again", enrolment, result.state)
            return Outcome(enrolment, result.state, result.version, result.product, result.error, 0.0, False)
        if result.state == FAILED:
            logger.warning("enrolment %s of %s refused: %s", enrolment, result.product, result.error)
            self._metrics.enrolments.labels(outcome=FAILED).inc()
            return Outcome(enrolment, FAILED, None, result.product, result.error, seconds, True, result.companions)
        assert result.version is not None
        self._metrics.enrolments.labels(outcome=DONE).inc()
        self._metrics.enrolment_seconds.observe(seconds)
        if result.companions:
            logger.info(
                "enrolment %s carried %d other request(s) of %s: %s",
                enrolment,
                len(result.companions),
                result.product,
                ", ".join(result.companions),
            )
        return Outcome(enrolment, DONE, result.version, result.product, None, seconds, True, result.companions)

    def _serve(self, version: str) -> None:
        """The moment `current` names the enrolment's version: the other workers told on Redis (they load it while
        this one does), and this worker serving it before the look-alike check and before the task is
        acknowledged. Neither failure fails the enrolment: the poll finds the version."""
        try:
            self._announce(version, "enrolment")
        except Exception as exc:  # the others still poll: a lost announcement only delays them
            logger.warning(
                "could not announce version %s on Redis (%s); other workers see it at their poll", version, exc
            )
        try:
            self._reload_now()
        except Exception:
            logger.exception("reloading version %s after its enrolment failed; the poll will try again", version)

    def _features_of(self, bundle: ModelBundle, photos: Sequence[bytes]) -> list[np.ndarray | ImageError]:
        model = self._model_for(bundle)
        return photo_features(model.prepare, model.features, photos, self._batch)

    def _model_for(self, bundle: ModelBundle) -> ServedModel:
        served = self._served()
        if served.info.version == bundle.version and served.info.name == bundle.name and not served.transport_only:
            return served
        with self._lock:
            if bundle.version not in self._loaded:
                self._loaded = {bundle.version: self._load(bundle.path)}  # keep one: the next enrolment's base
            return self._loaded[bundle.version]

    def _tell_waiting(self, enrolment: str, asked_by: tuple[str, str] | None, exc: RefinementsFull) -> None:
        """The first time the request waits for the running consolidation (run_request recorded it): count it and
        tell the device that asked (a `waiting` message on its result topic: not an outcome, which follows)."""
        if not exc.first_wait:
            return
        self._metrics.enrolments_waiting.inc()
        try:
            request = self.requests.request(enrolment)
        except EnrolmentError as error:  # the task is tried again all the same
            logger.warning("cannot read enrolment %s to tell its device it waits: %s", enrolment, error)
            return
        logger.info("enrolment %s of %s waits for the running consolidation: %s", enrolment, request["product"], exc)
        asked_by = _who_asked(request, asked_by)
        if asked_by is None:
            return
        message = _message(*asked_by, enrolment, str(request["product"]), WAITING)
        message["waiting"] = {
            "for": WAITING_FOR_CONSOLIDATION,
            "message": str(exc),
            "running_s": exc.running_s,
            "expected_s": exc.expected_s,
        }
        self._publish(self._topics.result(asked_by[0]), json.dumps(message).encode())

    def _answer_device(self, device: str, frame_id: str, outcome: Outcome) -> bool:
        """The outcome on the device's result topic; a failure also on its error topic, with its code. False when
        the broker did not take the result."""
        message = _message(device, frame_id, outcome.enrolment, outcome.product, outcome.state)
        message.update(
            version=outcome.version,
            error=dict(outcome.error) if outcome.error else None,
            confusable_with=[dict(c) for c in outcome.confusable_with],
        )
        sent = self._publish(self._topics.result(device), json.dumps(message).encode()) is not False
        if outcome.state != DONE:
            error = dict(outcome.error or {"code": INTERNAL, "message": "the enrolment failed"})
            document = error_message(device, frame_id, ErrorCode.INTERNAL, error.get("message", ""), time.time())
            document.update(message, error={"code": error.get("code", INTERNAL), "message": error.get("message", "")})
            self._publish(self._topics.error(device), json.dumps(document).encode())
        return sent


def _who_asked(request: Mapping[str, Any], asked_by: tuple[str, str] | None) -> tuple[str, str] | None:
    """The device and frame id a request stored to answer, else `asked_by` (the task's, for a request stored before
    replies were)."""
    reply = request.get("reply")
    if isinstance(reply, Mapping):
        return (str(reply.get("device")), str(reply.get("frame_id")))
    return asked_by


def _message(device: str, frame_id: str, enrolment: str, product: str, state: str) -> dict[str, Any]:
    """What every message to a device about its enrolment carries (the contract's enrolment message)."""
    return {
        "schema": SCHEMA_VERSION,
        "type": "enrolment",
        "device": device,
        "frame_id": frame_id,
        "enrolment": enrolment or None,
        "product": product,
        "state": state,
        "version": None,
        "error": None,
        "confusable_with": [],
        "at": rfc3339(time.time()),
    }
