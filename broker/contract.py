"""The wire contract: inbound frames, the task that carries them, and the result and error messages.

Everything here is pure: no sockets, no clocks read implicitly (timestamps are passed in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.codes import ErrorCode
from broker.errors import FrameRejected

SCHEMA_VERSION = "partsight/1"
RECOGNIZE_TASK = "partsight.recognize_frame"  # one frame a task: what bridges before windows sent
RECOGNIZE_BATCH_TASK = "partsight.recognize_frames"  # a window of frames a task: what bridges send now
FRAME_QUEUE = "partsight.frames"
ENROL_TASK = "partsight.enrol"  # one enrolment: new photos' features, refit, a new version (worker.enrolment_tasks)
ENROL_QUEUE = "partsight.enrol"  # its own queue, so enrolments never wait behind frames nor frames behind them
# after quick enrolments: their refinements folded into the head by a refit, off the frames (worker.consolidator);
# workers send it to themselves on ENROL_QUEUE
CONSOLIDATE_TASK = "partsight.consolidate"
MODEL_CHANNEL = "partsight:model-current"  # Redis pub/sub: `current` moved, workers reload at once (JSON
# {"version": ..., "reason": ...}); workers still poll, so a lost message only delays the reload
MAX_WINDOW_FRAMES = 1024  # the most frames a task may carry (PARTSIGHT_WINDOW_FRAMES is checked against it)

MAX_FRAME_ID_LENGTH = 128
MAX_TIMESTAMP_LENGTH = 64
_FRAME_ID_PATTERN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
LINE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # a line's name, whole (the store, the API and frames alike)
_LINE_PATTERN = re.compile(LINE_NAME)
OBJECT_NAME = r"[A-Za-z0-9._-]{1,64}"  # the MQTT 5 user property `object`: frames of one physical part
_OBJECT_PATTERN = re.compile(OBJECT_NAME)


def rfc3339(timestamp: float) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. 2026-11-23T01:14:20.123Z."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_frame_id() -> str:
    return uuid.uuid4().hex


def image_digest(image: bytes) -> str:
    """What tells a repeated frame from a new one under a reused frame_id: the image bytes' SHA-256 (128 bits)."""
    return hashlib.sha256(image).hexdigest()[:32]


def validate_frame_id(value: object) -> str:
    if not isinstance(value, str):
        raise FrameRejected(ErrorCode.BAD_METADATA, "frame_id must be a string")
    if not 0 < len(value) <= MAX_FRAME_ID_LENGTH:
        raise FrameRejected(ErrorCode.BAD_METADATA, f"frame_id must be 1 to {MAX_FRAME_ID_LENGTH} characters")
    if not _FRAME_ID_PATTERN.match(value):
        raise FrameRejected(ErrorCode.BAD_METADATA, "frame_id must be printable ASCII without spaces")
    return value


def validate_line(value: object) -> str:
    """A line name as a frame may carry it (the store says whether that line exists: the worker)."""
    if not is_line_name(value):
        raise FrameRejected(
            ErrorCode.UNKNOWN_LINE,
            "line must be 1 to 64 characters of A-Z a-z 0-9 . _ -, the first a letter or a digit",
        )
    assert isinstance(value, str)
    return value


def is_line_name(value: object) -> bool:
    return isinstance(value, str) and _LINE_PATTERN.fullmatch(value) is not None


def validate_object(value: object) -> str:
    """An object name as a frame may carry it: frames of one device with the same name are one physical part."""
    if not isinstance(value, str) or _OBJECT_PATTERN.fullmatch(value) is None:
        raise FrameRejected(ErrorCode.BAD_METADATA, "object must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
    return value


def validate_object_end(value: object) -> bool:
    """`object_end`: "1" marks an object's last frame, "0" (or no property) any other."""
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise FrameRejected(ErrorCode.BAD_METADATA, "object_end must be 1 or 0")


def validate_captured_at(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP_LENGTH:
        raise FrameRejected(ErrorCode.BAD_METADATA, "captured_at must be an RFC 3339 string")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FrameRejected(ErrorCode.BAD_METADATA, f"captured_at is not RFC 3339: {exc}") from exc
    return value


@dataclass(frozen=True, slots=True)
class FrameRequest:
    """One admitted frame, as the bridge hands it to a worker."""

    device: str
    frame_id: str
    image: bytes = field(repr=False)
    received_at: float
    captured_at: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    line: str | None = None  # the line the frame names (MQTT 5 user property `line`); None: its device's, if any
    object_name: str | None = None  # the physical part it shows (user property `object`); None: the worker groups
    object_end: bool = False  # the object's last frame (user property `object_end` = 1)

    def to_task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the recognition task; msgpack carries the bytes as they are. `line` and `object`
        only when set: a worker of an earlier release reads the same frame as it did."""
        extra: dict[str, Any] = {"line": self.line} if self.line is not None else {}
        if self.object_name is not None:
            extra |= {"object": self.object_name, "object_end": self.object_end}
        return {
            "device": self.device,
            "frame_id": self.frame_id,
            "image": self.image,
            "received_at": self.received_at,
            "captured_at": self.captured_at,
            "response_topic": self.response_topic,
            "correlation_data": self.correlation_data,
            **extra,
        }

    @classmethod
    def from_task_kwargs(cls, kwargs: Mapping[str, Any]) -> FrameRequest:
        image = kwargs["image"]
        if isinstance(image, str):  # a json-serialised task carries base64 text
            image = base64.b64decode(image)
        correlation = kwargs.get("correlation_data")
        if isinstance(correlation, str):
            correlation = base64.b64decode(correlation)
        return cls(
            device=str(kwargs["device"]),
            frame_id=str(kwargs["frame_id"]),
            image=bytes(image),
            received_at=float(kwargs["received_at"]),
            captured_at=kwargs.get("captured_at"),
            response_topic=kwargs.get("response_topic"),
            correlation_data=correlation,
            line=str(kwargs["line"]) if kwargs.get("line") is not None else None,
            object_name=str(kwargs["object"]) if kwargs.get("object") is not None else None,
            object_end=bool(kwargs.get("object_end", False)),
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    frame_id: str | None
    captured_at: str | None
    image: bytes = field(repr=False)


def looks_like_envelope(payload: bytes) -> bool:
    """A JSON envelope starts with '{'; no supported image format does."""
    return payload.lstrip(b" \t\r\n")[:1] == b"{"


def parse_envelope(payload: bytes) -> Envelope:
    """Parse the MQTT 3.1.1 JSON envelope `{"frame_id", "captured_at", "image_b64"}`."""
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameRejected(ErrorCode.BAD_ENVELOPE, f"envelope is not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise FrameRejected(ErrorCode.BAD_ENVELOPE, "envelope must be a JSON object")
    image_b64 = document.get("image_b64")
    if not isinstance(image_b64, str) or not image_b64:
        raise FrameRejected(ErrorCode.BAD_ENVELOPE, "envelope needs a non-empty string field image_b64")
    try:
        image = base64.b64decode(image_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameRejected(ErrorCode.BAD_ENVELOPE, f"image_b64 is not valid base64: {exc}") from exc
    if not image:
        raise FrameRejected(ErrorCode.BAD_ENVELOPE, "image_b64 decodes to no bytes")
    frame_id = document.get("frame_id")
    try:
        checked_id = None if frame_id is None else validate_frame_id(frame_id)
        captured_at = validate_captured_at(document.get("captured_at"))
    except FrameRejected as exc:
        raise FrameRejected(ErrorCode.BAD_ENVELOPE, exc.message) from exc
    return Envelope(frame_id=checked_id, captured_at=captured_at, image=image)


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_message(device: str, frame_id: str | None, code: ErrorCode, message: str, at: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "frame_id": frame_id,
        "device": device,
        "error": {"code": str(code), "message": message},
        "at": rfc3339(at),
    }


@dataclass(frozen=True, slots=True)
class Timings:
    """Per-stage durations in milliseconds."""

    queue: float
    decode: float
    features: float
    classify: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {
            "queue": round(self.queue, 3),
            "decode": round(self.decode, 3),
            "features": round(self.features, 3),
            "classify": round(self.classify, 3),
            "total": round(self.total, 3),
        }


def match_entry(match: Mapping[str, Any]) -> dict[str, Any]:
    """One nearest enrolled photo as a result names it: its product, its path under `images/`, the cosine."""
    return {
        "product": str(match["product"]),
        "photo": str(match["photo"]),
        "similarity": round(float(match["similarity"]), 6),
    }


def object_event(
    *,
    device: str,
    name: str,
    product: str | None,
    category: str | None,
    confidence: float,
    novelty: float | None,
    agreeing: int,
    frame_ids: Sequence[str],
    first_received_at: float,
    reason: str,
    catalog: Mapping[str, Any] | None,
    model_name: str,
    model_version: str,
    line: str | None,
    decided_at: float,
) -> dict[str, Any]:
    """One object's decision, as published once on `<prefix>/<device>/event`: `reason` is what decided it
    (`agreed`, `object_end`, `max_frames`, `next_object` or `gap`); `product` None is `unknown`."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "object",
        "device": device,
        "object": name,
        "status": "recognized" if product is not None else "unknown",
        "product": product if product is not None else "unknown",
        "category": category,
        "confidence": round(confidence, 6),
        "novelty": None if novelty is None else round(novelty, 6),
        "frames": len(frame_ids),
        "agreeing": agreeing,
        "frame_ids": list(frame_ids),
        "reason": reason,
        "catalog": dict(catalog) if catalog is not None else None,
        "model": {"name": model_name, "version": model_version},
        "line": line,
        "first_received_at": rfc3339(first_received_at),
        "decided_at": rfc3339(decided_at),
        "decision_seconds": round(max(0.0, decided_at - first_received_at), 3),
    }


def result_message(
    *,
    request: FrameRequest,
    status: str,
    product: str | None,
    category: str | None,
    confidence: float,
    category_confidence: float,
    top_k: list[dict[str, Any]],
    novelty: float | None = None,
    matches: Sequence[Mapping[str, Any]] = (),
    catalog: Mapping[str, Any] | None,
    model_name: str,
    model_version: str,
    timings: Timings,
    completed_at: float,
    line: str | None = None,
    object_name: str | None = None,
    object_state: str | None = None,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "frame_id": request.frame_id,
        "device": request.device,
        "status": status,
        "product": product,
        "category": category,
        "confidence": round(confidence, 6),
        "category_confidence": round(category_confidence, 6),
        "top_k": top_k,
        "novelty": round(float(novelty), 6) if novelty is not None else None,
        "matches": [match_entry(match) for match in matches],
        "catalog": dict(catalog) if catalog is not None else None,
        "model": {"name": model_name, "version": model_version},
        "line": line,
        "object": object_name,
        "object_state": object_state,
        "timings_ms": timings.as_dict(),
        "captured_at": request.captured_at,
        "received_at": rfc3339(request.received_at),
        "completed_at": rfc3339(completed_at),
    }
