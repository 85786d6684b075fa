"""Admission of one inbound MQTT message: size first, then topic, metadata and envelope. Pure logic."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from broker.codes import ErrorCode
from broker.contract import (
    FrameRequest,
    looks_like_envelope,
    new_frame_id,
    parse_envelope,
    validate_captured_at,
    validate_frame_id,
    validate_line,
    validate_object,
    validate_object_end,
)
from broker.errors import FrameRejected


@dataclass(frozen=True, slots=True)
class Inbound:
    """What the bridge needs from one MQTT PUBLISH, independent of paho."""

    topic: str
    payload: bytes
    user_properties: Mapping[str, str]
    response_topic: str | None = None
    correlation_data: bytes | None = None


def admit(
    message: Inbound,
    *,
    device: str,
    max_payload_bytes: int,
    received_at: float,
    make_frame_id: Callable[[], str] = new_frame_id,
) -> FrameRequest:
    """Turn an inbound message from `device` into a FrameRequest, or raise FrameRejected with its code.

    The frame id is read (when it can be) before a rejection is raised, so the device can match the error.
    """
    size = len(message.payload)
    if size > max_payload_bytes:
        raise FrameRejected(ErrorCode.PAYLOAD_TOO_LARGE, f"payload is {size} bytes, the limit is {max_payload_bytes}")
    if size == 0:
        raise FrameRejected(ErrorCode.UNSUPPORTED_FORMAT, "payload is empty")
    frame_id: str | None = None
    captured_at: str | None = None
    image = message.payload
    if "frame_id" in message.user_properties:
        frame_id = validate_frame_id(message.user_properties["frame_id"])
    if "captured_at" in message.user_properties:
        captured_at = validate_captured_at(message.user_properties["captured_at"])
    properties = message.user_properties
    line = validate_line(properties["line"]) if "line" in properties else None
    part = validate_object(properties["object"]) if "object" in properties else None
    object_end = validate_object_end(properties["object_end"]) if "object_end" in properties else False
    if object_end and part is None:
        raise FrameRejected(ErrorCode.BAD_METADATA, "object_end needs the object it ends")
    if looks_like_envelope(message.payload):
        envelope = parse_envelope(message.payload)
        frame_id = envelope.frame_id or frame_id
        captured_at = envelope.captured_at or captured_at
        image = envelope.image
    return FrameRequest(
        device=device,
        frame_id=frame_id or make_frame_id(),
        image=image,
        received_at=received_at,
        captured_at=captured_at,
        response_topic=message.response_topic,
        correlation_data=message.correlation_data,
        line=line,
        object_name=part,
        object_end=object_end,
    )


def frame_id_hint(message: Inbound) -> str | None:
    """The frame id a rejected message claimed, if any and if sane, so its error can name it."""
    candidate = message.user_properties.get("frame_id")
    if candidate is None and looks_like_envelope(message.payload) and len(message.payload) < 1 << 20:
        try:
            candidate = parse_envelope(message.payload).frame_id
        except FrameRejected:
            return None
    try:
        return validate_frame_id(candidate) if candidate is not None else None
    except FrameRejected:
        return None
