"""The worker's side of an enrolment: run one `partsight.enrol` task, record how it went, tell everyone.

A task names a request the API or `partsight enrol` stored (`{"enrolment": ID}`), or carries an MQTT device's
photo (`{"device", "frame_id", "product", "catalog", "photo", "received_at"}`), which is stored here as a request
under an id derived from the device and frame id, so a redelivered task finds it again. Under the store's lock the
request's status is read first: one already done or failed is not run twice (a task redelivered while another
worker ran it, or after this one died past the end). Then models.enrol builds and writes the version, `current`
moves, the worker swaps it in at once, and MODEL_CHANNEL tells every other worker to do the same. A device that
enrolled over MQTT gets the outcome on its result topic (a failure on its error topic, with a code).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from broker.codes import ErrorCode
from broker.contract import SCHEMA_VERSION, error_message, rfc3339
from broker.topics import Topics
from models.artifact import ModelBundle
from models.enrol import run_request
from models.enrolments import DONE, FAILED, EnrolmentStore
from models.errors import EnrolmentError, ImageError
from worker.errors import MalformedTask
from worker.metrics import WorkerMetrics
from worker.pipeline import ServedModel

logger = logging.getLogger(__name__)

INTERNAL = "internal"  # the code of an enrolment that failed on something other than its request


@dataclass(frozen=True)
class Outcome:
    enrolment: str
    state: str  # done or failed
    version: str | None
    product: str
    error: Mapping[str, str] | None
    seconds: float
    ran: bool  # False when the request had already finished (a redelivered task)


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
        publish: Callable[[str, bytes], None],
        topics: Topics,
    ) -> None:
        """`served`: the model frames use now; `load`: a version's model (for a version not served here);
        `announce(version, reason)`: publish on MODEL_CHANNEL; `reload_now`: this worker's reloader check;
        `publish(topic, payload)`: an answer to an MQTT device."""
        self.store = store
        self.requests = EnrolmentStore(store)
        self._served, self._load = served, load
        self._metrics = metrics
        self._announce, self._reload_now, self._publish = announce, reload_now, publish
        self._topics = topics
        self._loaded: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def handle(self, kwargs: Mapping[str, Any]) -> Outcome:
        """Run the task; MalformedTask if it fits neither form."""
        device = None
        if "enrolment" in kwargs:
            enrolment = kwargs["enrolment"]
            if not isinstance(enrolment, str):
                raise MalformedTask("an enrolment task's 'enrolment' must be an id")
        else:
            device, frame_id, enrolment = self._store_device_request(kwargs)
        try:
            self.requests.get(enrolment)
        except EnrolmentError as exc:
            raise MalformedTask(f"enrolment {enrolment!r} is not in {self.requests.root}: {exc}") from exc
        outcome = self._run(enrolment)
        if device is not None:
            self._answer_device(device, frame_id, outcome)
        return outcome

    def _store_device_request(self, kwargs: Mapping[str, Any]) -> tuple[str, str, str]:
        device, frame_id, product = kwargs.get("device"), kwargs.get("frame_id"), kwargs.get("product")
        photo, catalog, received = kwargs.get("photo"), kwargs.get("catalog"), kwargs.get("received_at")
        if not all(isinstance(v, str) for v in (device, frame_id, product)) or not isinstance(photo, bytes):
            raise MalformedTask("an MQTT enrolment needs device, frame_id, product (strings) and photo (bytes)")
        if catalog is not None and not isinstance(catalog, Mapping):
            raise MalformedTask("an MQTT enrolment's catalog must be a mapping")
        at = float(received) if isinstance(received, (int, float)) else time.time()
        assert isinstance(device, str) and isinstance(frame_id, str) and isinstance(product, str)
        key = f"mqtt\x00{device}\x00{frame_id}\x00{hashlib.sha256(photo).hexdigest()}"
        try:
            enrolment = self.requests.create(
                product,
                [(f"{frame_id}.img", photo)],
                record=catalog,
                source=f"mqtt:{device}",
                at=at,
                key=key,
            )
        except EnrolmentError as exc:  # a bad product id or record: the device hears why, nothing is stored
            self._metrics.enrolments.labels(outcome=FAILED).inc()
            self._publish(
                self._topics.error(device),
                json.dumps(error_message(device, frame_id, ErrorCode.BAD_METADATA, str(exc), time.time())).encode(),
            )
            raise MalformedTask(f"MQTT enrolment from {device} refused: {exc}") from exc
        return device, frame_id, enrolment

    def _run(self, enrolment: str) -> Outcome:
        started = time.monotonic()
        try:
            result = run_request(self.store, enrolment, self._features_of)
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
            return Outcome(enrolment, FAILED, None, result.product, result.error, seconds, True)
        assert result.version is not None
        self._metrics.enrolments.labels(outcome=DONE).inc()
        self._metrics.enrolment_seconds.observe(seconds)
        try:
            self._reload_now()  # this worker serves it before the task is acknowledged
        except Exception:
            logger.exception("reloading after enrolment %s failed; the poll will try again", enrolment)
        try:
            self._announce(result.version, "enrolment")
        except Exception as exc:  # the others still poll: a lost announcement only delays them
            logger.warning(
                "could not announce version %s on Redis (%s); other workers see it at their poll", result.version, exc
            )
        return Outcome(enrolment, DONE, result.version, result.product, None, seconds, True)

    def _features_of(self, bundle: ModelBundle, photos: Sequence[bytes]) -> list[np.ndarray | ImageError]:
        model = self._model_for(bundle)
        prepared: list[Any] = []
        results: list[np.ndarray | ImageError | None] = []
        for data in photos:
            try:
                prepared.append(model.prepare(data))
                results.append(None)
            except ImageError as exc:
                results.append(exc)
        computed = iter(model.features(prepared) if prepared else [])
        return [next(computed) if result is None else result for result in results]

    def _model_for(self, bundle: ModelBundle) -> ServedModel:
        served = self._served()
        if served.info.version == bundle.version and served.info.name == bundle.name and not served.transport_only:
            return served
        with self._lock:
            if bundle.version not in self._loaded:
                self._loaded = {bundle.version: self._load(bundle.path)}  # keep one: the next enrolment's base
            return self._loaded[bundle.version]

    def _answer_device(self, device: str, frame_id: str, outcome: Outcome) -> None:
        if outcome.state == DONE:
            message = {
                "schema": SCHEMA_VERSION,
                "type": "enrolment",
                "device": device,
                "frame_id": frame_id,
                "enrolment": outcome.enrolment,
                "product": outcome.product,
                "state": outcome.state,
                "version": outcome.version,
                "error": None,
                "at": rfc3339(time.time()),
            }
            self._publish(self._topics.result(device), json.dumps(message).encode())
            return
        error = dict(outcome.error or {})
        document = error_message(device, frame_id, ErrorCode.BAD_METADATA, error.get("message", ""), time.time())
        document["error"] = {"code": error.get("code", INTERNAL), "message": error.get("message", "")}
        document.update(type="enrolment", enrolment=outcome.enrolment, product=outcome.product, state=outcome.state)
        self._publish(self._topics.error(device), json.dumps(document).encode())
