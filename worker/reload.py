"""Hot model reload: when the store's `current` moves, load the new version beside the served one, verify it,
and swap it in; a version that fails verification is refused and the served one stays.

`check()` is the whole decision and runs synchronously (tests call it); `start()` runs it every `interval_s`
on a daemon thread. A refused version is not tried again until `current` moves once more.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.pipeline import ServedModel

logger = logging.getLogger(__name__)

Signature = tuple[str, str]  # (version directory, manifest sha256): models.bundle.served_signature

LOADED = "loaded"
REFUSED = "refused"
UNCHANGED = "unchanged"


@dataclass
class ModelSlot:
    """The served version and its signature. Frames read `model` once and keep what they read."""

    model: ServedModel
    signature: Signature

    def get(self) -> ServedModel:
        return self.model


class ModelReloader:
    def __init__(
        self,
        model_dir: Path,
        slot: ModelSlot,
        *,
        load: Callable[[Path], ServedModel],
        signature: Callable[[Path], Signature],
        reloads: Any,
        refused: Any,
        on_loaded: Callable[[ServedModel], None],
        interval_s: float,
    ) -> None:
        """`reloads`: a counter labelled by outcome; `refused`: a gauge, 1 while the store's current version is
        one this worker refused; `on_loaded` runs after each swap (metrics of the new version)."""
        self._model_dir = model_dir
        self._slot = slot
        self._load = load
        self._signature = signature
        self._reloads, self._refused_gauge, self._on_loaded = reloads, refused, on_loaded
        self.interval_s = interval_s
        self._refused: Signature | str | None = None  # the last version (or unreadable store) refused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    def check(self) -> str:
        """Look at the store once: swap in a new verified version, refuse a bad one, or leave things as they are.
        Callers in several threads (the poll, the Redis signal, an enrolment) take turns."""
        with self._check_lock:
            return self._check()

    def _check(self) -> str:
        try:
            seen = self._signature(self._model_dir)
        except Exception as exc:  # a dangling `current`, an unreadable manifest: nothing to load, keep serving
            return self._refuse(str(exc), f"cannot read the model store: {exc}")
        if seen == self._slot.signature:
            if self._refused is not None:  # the store went back to the served version
                logger.info("model store points at the served version %s again", self._slot.model.info.version)
                self._refused = None
                self._refused_gauge.set(0)
            return UNCHANGED
        if seen == self._refused:
            return UNCHANGED
        try:
            model = self._load(Path(seen[0]))  # that version directory: `current` may move again meanwhile
        except Exception as exc:
            return self._refuse(seen, f"{type(exc).__name__}: {exc}")
        previous = self._slot.model.info.version
        self._slot.model, self._slot.signature = model, seen
        self._refused = None
        self._refused_gauge.set(0)
        self._reloads.labels(outcome=LOADED).inc()
        self._on_loaded(model)
        logger.info("model reloaded: now serving %s version %s (was %s)", model.info.name, model.info.version, previous)
        return LOADED

    def _refuse(self, what: Signature | str, reason: str) -> str:
        if what == self._refused:
            return UNCHANGED
        self._refused = what
        self._refused_gauge.set(1)
        self._reloads.labels(outcome=REFUSED).inc()
        logger.error(
            "new model refused, still serving %s version %s: %s",
            self._slot.model.info.name,
            self._slot.model.info.version,
            reason,
        )
        return REFUSED

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # never let the watcher die: the served model is unaffected
                logger.exception("model reload check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class ReloadSignal:
    """Reload at once when another process says `current` moved (Redis pub/sub on MODEL_CHANNEL): an enrolment,
    an activation. The poll stays: a message missed while Redis was away only waits for the next poll."""

    def __init__(self, client_factory: Callable[[], Any], channel: str, on_signal: Callable[[], object]) -> None:
        self._client_factory = client_factory
        self._channel = channel
        self._on_signal = on_signal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-signal", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client_factory().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        logger.info("model store changed (%s): checking it now", message.get("data", b"")[:200])
                        self._on_signal()
            except Exception as exc:  # Redis away: try again shortly; the poll still runs
                logger.debug("model signal subscription lost (%s); resubscribing", exc)
                self._stop.wait(2.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
