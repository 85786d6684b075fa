"""Enrolment requests on disk: what was asked (a product, its photos, maybe its catalog record) and how it went.

Layout, under `<model store>/enrolments/` so that the API, the workers and `partsight enrol` all find it:
    <id>/request.json   product, catalog record (or null), photo names and sizes, who asked, when
    <id>/photos/NNN-*   the photos as they came (never decoded here)
    <id>/status.json    state (queued, running, done, failed), the version it made, why it failed, timings
Every write is a rename or an os.replace, so a reader sees the old status or the new one, never half of one.
Ids are time-sortable and checked on every path that takes one (no "..", "/", absolute path). Pure file I/O:
the API uses this module and stays free of numpy, torch and Pillow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.contract import rfc3339
from models.errors import EnrolmentError, UnknownEnrolment

ENROLMENTS_DIR = "enrolments"
STORE_UNAVAILABLE = "store_unavailable"  # the store could not be written or read: nothing is wrong with the request
CORRUPT_REQUEST = "corrupt_request"  # a stored request that is not one: request.json unreadable, a key or photo missing
KEYS_DIR = ".keys"  # key (sha256) -> enrolment id, for requests that may be delivered twice
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
WAITING = "waiting"  # not a stored state: what a device is told while its queued request waits
WAITING_FOR_CONSOLIDATION = "consolidation"  # a queued request's wait: the head full of quick enrolments
BUSY = "busy"  # a failed request's error code: the store turned it away (its lock held too long, or the head full)
ENROLMENT_ID = re.compile(r"\A[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}\Z")
PRODUCT_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # a folder name on every OS, a topic-safe string
MAX_PHOTOS = 200  # per enrolment
_PHOTO_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def new_enrolment_id(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%dT%H%M%S%fZ") + f"-{secrets.token_hex(4)}"


def check_enrolment_id(value: object) -> str:
    if not isinstance(value, str) or not ENROLMENT_ID.match(value):
        raise UnknownEnrolment(f"no enrolment {str(value)[:80]!r}")
    return value


def check_product_id(value: object) -> str:
    """A product id usable as a folder name and a topic-safe string; EnrolmentError otherwise."""
    if not isinstance(value, str) or not PRODUCT_ID.match(value):
        raise EnrolmentError(
            f"product id {str(value)[:80]!r} must be 1 to 128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def check_catalog_record(product: str, record: object) -> dict[str, Any]:
    """A catalog record for `product`: a JSON object with non-empty string `name` and `category`; its `product`,
    if given, must be `product`. Further fields travel into results as they are."""
    if not isinstance(record, Mapping):
        raise EnrolmentError("a catalog record must be a JSON object with at least 'name' and 'category'")
    checked = dict(record)
    if checked.setdefault("product", product) != product:
        raise EnrolmentError(f"the catalog record names product {checked['product']!r}, not {product!r}")
    for name in ("name", "category"):
        value = checked.get(name)
        if not isinstance(value, str) or not value.strip():
            raise EnrolmentError(f"the catalog record needs a non-empty string {name!r}")
        checked[name] = value.strip()
    try:
        json.dumps(checked, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EnrolmentError(f"the catalog record is not plain JSON: {exc}") from exc
    return checked


REQUEST_KEYS = ("id", "product", "record", "photos", "created_at")  # what every stored request holds


def _corrupt(enrolment: str, problem: str) -> EnrolmentError:
    return EnrolmentError(f"enrolment {enrolment}: {problem}", CORRUPT_REQUEST)


def _write_json(path: Path, document: Any) -> None:
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    staging.write_text(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staging, path)


def _stage_photos(folder: Path, photos: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The photos as they came, under names safe on every file system; their names and sizes."""
    folder.mkdir()
    names = []
    for index, (name, data) in enumerate(photos):
        safe = _PHOTO_NAME.sub("_", Path(name or "photo").name)[-80:].lstrip(".") or "photo"
        stored = f"{index:03d}-{safe}"
        (folder / stored).write_bytes(data)
        names.append({"name": stored, "bytes": len(data)})
    return names


class EnrolmentStore:
    """The enrolment requests of one model store.

    What the file system or a stored document raises is translated here, at the boundary: EnrolmentError with
    `STORE_UNAVAILABLE` for a store that cannot be read or written, with `CORRUPT_REQUEST` for a stored request
    that is not one, UnknownEnrolment for an id that names none. Callers catch EnrolmentError, the family."""

    def __init__(self, model_store: Path) -> None:
        self.root = Path(model_store) / ENROLMENTS_DIR
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EnrolmentError(f"cannot create {self.root}: {exc.strerror or exc}") from exc

    def create(
        self,
        product: str,
        photos: Sequence[tuple[str, bytes]],
        *,
        record: Mapping[str, Any] | None = None,
        source: str = "api",
        at: float | None = None,
        key: str | None = None,
        reply: Mapping[str, str] | None = None,
    ) -> str:
        """Store a request and its photos (queued); returns its id. Checks the product id and the record.
        `reply`: the MQTT device and frame id to answer (`{"device", "frame_id"}`), kept with the request so that
        whichever worker carries it out answers it, and a worker that finds it done but unanswered answers it.

        `key` names what the request came from (an MQTT device, its frame id and the photo's sha256): a request
        already stored under that key is returned as it is, so a delivery repeated by the broker or by Celery
        finds its request instead of making a second one."""
        if key is not None:
            found = self._keyed(key)
            if found is not None:
                return found
        check_product_id(product)
        checked = check_catalog_record(product, record) if record is not None else None
        if not photos:
            raise EnrolmentError("an enrolment needs at least one photo")
        if len(photos) > MAX_PHOTOS:
            raise EnrolmentError(f"at most {MAX_PHOTOS} photos an enrolment, got {len(photos)}")
        now = time.time() if at is None else at
        enrolment = new_enrolment_id(now)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            staging.chmod(0o755)
            request = {
                "id": enrolment,
                "product": product,
                "record": checked,
                "photos": _stage_photos(staging / "photos", photos),
                "source": source,
                "created_at": rfc3339(now),
                **({"reply": dict(reply)} if reply is not None else {}),
            }
            _write_json(staging / "request.json", request)
            _write_json(staging / "status.json", {"state": QUEUED, "updated_at": rfc3339(now)})
            os.rename(staging, self.root / enrolment)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise EnrolmentError(
                f"cannot store the enrolment in {self.root}: {exc.strerror or exc}", STORE_UNAVAILABLE
            ) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if key is not None:
            return self._claim_key(key, enrolment)
        return enrolment

    def _key_path(self, key: str) -> Path:
        return self.root / KEYS_DIR / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def _keyed(self, key: str) -> str | None:
        try:
            enrolment = self._key_path(key).read_text(encoding="ascii").strip()
            self._folder(enrolment)
        except (OSError, UnicodeDecodeError, EnrolmentError):
            return None
        return enrolment

    def _claim_key(self, key: str, enrolment: str) -> str:
        """Tie `key` to the request just stored; when another delivery tied it first, that one wins and this
        request is removed."""
        path = self._key_path(key)
        written = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            written.write_text(enrolment, encoding="ascii")
        except OSError as exc:
            raise self._unavailable("store the enrolment's key", exc) from exc
        try:
            os.link(written, path)  # appears whole, or not at all: a reader never sees an empty key
        except FileExistsError:
            winner = self._keyed(key)
            if winner is not None:
                shutil.rmtree(self.root / enrolment, ignore_errors=True)
                return winner
            path.unlink(missing_ok=True)  # a key left by a request that is gone: take it over
            return self._claim_key(key, enrolment)
        except OSError as exc:
            raise self._unavailable("store the enrolment's key", exc) from exc
        finally:
            written.unlink(missing_ok=True)
        return enrolment

    def _unavailable(self, doing: str, exc: OSError) -> EnrolmentError:
        return EnrolmentError(f"cannot {doing} in {self.root}: {exc.strerror or exc}", STORE_UNAVAILABLE)

    def _folder(self, enrolment: object) -> Path:
        folder = self.root / check_enrolment_id(enrolment)
        if not (folder / "request.json").is_file():
            raise UnknownEnrolment(f"no enrolment {enrolment!r}")
        return folder

    def request(self, enrolment: str) -> dict[str, Any]:
        """The stored request: its id, product, record, photos, source and creation time."""
        folder = self._folder(enrolment)
        try:
            document = json.loads((folder / "request.json").read_text(encoding="utf-8"))
        except OSError as exc:
            raise self._unavailable(f"read enrolment {enrolment}", exc) from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(enrolment, f"request.json is not JSON ({exc})") from exc
        missing = [key for key in REQUEST_KEYS if not isinstance(document, dict) or key not in document]
        if missing:
            raise _corrupt(enrolment, f"request.json lacks {', '.join(missing)}")
        if not isinstance(document["photos"], list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in document["photos"]
        ):
            raise _corrupt(enrolment, "request.json's photos are not a list of named photos")
        checked: dict[str, Any] = document
        return checked

    def photos(self, enrolment: str) -> list[tuple[str, bytes]]:
        folder = self._folder(enrolment)
        names = [str(entry["name"]) for entry in self.request(enrolment)["photos"]]
        try:
            return [(name, (folder / "photos" / name).read_bytes()) for name in names]
        except FileNotFoundError as exc:
            raise _corrupt(enrolment, f"photo {Path(exc.filename or '').name or '?'} is missing") from exc
        except OSError as exc:
            raise self._unavailable(f"read the photos of enrolment {enrolment}", exc) from exc

    def get(self, enrolment: str) -> dict[str, Any]:
        """What the API answers: id, product, state, photos, version made, error, times."""
        folder = self._folder(enrolment)
        request = self.request(enrolment)
        try:
            status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # written by os.replace: absent, not torn
            status = {"state": QUEUED}
        if not isinstance(status, dict):
            status = {"state": QUEUED}
        return {
            "id": request["id"],
            "product": request["product"],
            "new_product": request["record"] is not None,
            "photos": len(request["photos"]),
            "source": request.get("source"),
            "created_at": request["created_at"],
            "state": status.get("state", QUEUED),
            "version": status.get("version"),
            "error": status.get("error"),
            "seconds": status.get("seconds"),
            "with": list(status.get("with") or []),  # the other requests of the product in the same version
            # existing products its photos were answered as in more than 10% of its fold answers: {product, share}
            "confusable_with": list(status.get("confusable_with") or []),
            "updated_at": status.get("updated_at"),
            # a queued request the store turned away for now: {for, since, message, running_s, expected_s}
            "waiting": status.get("waiting") if status.get("state", QUEUED) == QUEUED else None,
        }

    def queued_for(self, product: str, *, since: float, exclude: str, max_photos: int = MAX_PHOTOS) -> list[str]:
        """Other requests of `product` still queued, created from `since` (a Unix time) on, oldest first, as many as
        fit in `max_photos` photos with `exclude`'s: what one version can carry together with `exclude`."""
        first = new_enrolment_id(since)[:-9]  # ids sort by their creation time
        try:
            found = sorted(p.name for p in self.root.iterdir() if ENROLMENT_ID.match(p.name) and p.name >= first)
        except OSError as exc:
            raise self._unavailable("list the enrolments", exc) from exc
        photos = len(self.request(exclude)["photos"])
        picked = []
        for enrolment in found:
            if enrolment == exclude:
                continue
            try:
                status = self.get(enrolment)
            except EnrolmentError:
                continue
            if status["product"] != product or status["state"] != QUEUED or photos + status["photos"] > max_photos:
                continue
            if str(status["source"]).startswith("mqtt:") and "reply" not in self.request(enrolment):
                continue  # stored by a release before replies: only its own task knows whom to answer
            photos += status["photos"]
            picked.append(enrolment)
        return picked

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first; one that cannot be read is left out (EnrolmentError when the folder cannot be listed)."""
        try:
            found = sorted((p.name for p in self.root.iterdir() if ENROLMENT_ID.match(p.name)), reverse=True)
        except OSError as exc:
            raise self._unavailable("list the enrolments", exc) from exc
        listed = []
        for enrolment in found[: max(0, limit)]:
            try:
                listed.append(self.get(enrolment))
            except EnrolmentError:  # removed meanwhile, corrupt, or unreadable: the rest are still listed
                continue
        return listed

    def set_state(self, enrolment: str, state: str, **details: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown enrolment state {state!r}")  # a bug: callers pass the constants above
        folder = self._folder(enrolment)
        try:
            _write_json(folder / "status.json", {"state": state, "updated_at": rfc3339(time.time()), **details})
        except OSError as exc:
            raise self._unavailable(f"record the state of enrolment {enrolment}", exc) from exc

    def waiting(self, enrolment: str, reason: str, message: str, **details: Any) -> bool:
        """Record that a queued request waits (`reason`: for what; `message`: why, in words; `details`: figures such
        as the seconds expected); True the first time it waits for `reason`, so its device is told once. A request
        no longer queued is left as it is (False); running it clears the record."""
        folder = self._folder(enrolment)
        try:
            status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            status = {}
        status = status if isinstance(status, dict) else {}
        if status.get("state", QUEUED) != QUEUED:
            return False
        before = status.get("waiting")
        first = not (isinstance(before, dict) and before.get("for") == reason)
        now = rfc3339(time.time())
        since = now if first or not isinstance(before, dict) else before.get("since", now)
        waiting = {"for": reason, "since": since, "message": message, **details}
        try:
            _write_json(folder / "status.json", {**status, "state": QUEUED, "updated_at": now, "waiting": waiting})
        except OSError as exc:
            raise self._unavailable(f"record that enrolment {enrolment} waits", exc) from exc
        return first

    def running(self, enrolment: str) -> None:
        self.set_state(enrolment, RUNNING)

    def done(self, enrolment: str, version: str, seconds: float, **details: Any) -> None:
        self.set_state(enrolment, DONE, version=version, seconds=round(seconds, 3), **details)

    def answered(self, enrolment: str) -> None:
        """Record that the device that asked was told the outcome (a redelivered task then stays silent)."""
        folder = self._folder(enrolment)
        try:
            status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
            _write_json(folder / "status.json", {**status, "answered": True})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(enrolment, f"status.json cannot be updated ({exc})") from exc

    def is_answered(self, enrolment: str) -> bool:
        try:
            status = json.loads((self._folder(enrolment) / "status.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(status, dict) and status.get("answered") is True

    def failed(self, enrolment: str, code: str, message: str) -> None:
        self.set_state(enrolment, FAILED, error={"code": code, "message": message})
