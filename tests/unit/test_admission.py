from __future__ import annotations

import base64
import json

import pytest

from broker.admission import Inbound, admit, frame_id_hint
from broker.codes import ErrorCode
from broker.errors import FrameRejected

JPEG = b"\xff\xd8\xff\xe0fake"


def inbound(payload: bytes, **props: str) -> Inbound:
    return Inbound(topic="partsight/cam/frame", payload=payload, user_properties=props)


def test_size_is_checked_before_anything_else() -> None:
    big = b"{" + b"x" * 100  # an invalid envelope, but too large first
    with pytest.raises(FrameRejected) as caught:
        admit(inbound(big, frame_id="bad id"), device="cam", max_payload_bytes=50, received_at=0)
    assert caught.value.code == ErrorCode.PAYLOAD_TOO_LARGE


def test_raw_image_with_user_properties() -> None:
    request = admit(
        inbound(JPEG, frame_id="f-9", captured_at="2026-11-23T00:00:00Z"),
        device="cam",
        max_payload_bytes=100,
        received_at=5.0,
    )
    assert (request.frame_id, request.captured_at, request.image, request.received_at) == (
        "f-9",
        "2026-11-23T00:00:00Z",
        JPEG,
        5.0,
    )


def test_a_frame_without_id_gets_one() -> None:
    request = admit(inbound(JPEG), device="cam", max_payload_bytes=100, received_at=0, make_frame_id=lambda: "gen")
    assert request.frame_id == "gen"


def test_envelope_fields_win_over_missing_properties() -> None:
    payload = json.dumps({"frame_id": "e-1", "image_b64": base64.b64encode(JPEG).decode()}).encode()
    request = admit(inbound(payload), device="cam", max_payload_bytes=1000, received_at=0)
    assert (request.frame_id, request.image) == ("e-1", JPEG)


def test_empty_payload_and_bad_metadata_are_refused() -> None:
    with pytest.raises(FrameRejected) as caught:
        admit(inbound(b""), device="cam", max_payload_bytes=10, received_at=0)
    assert caught.value.code == ErrorCode.UNSUPPORTED_FORMAT
    with pytest.raises(FrameRejected) as caught:
        admit(inbound(JPEG, frame_id="x" * 10_000), device="cam", max_payload_bytes=100, received_at=0)
    assert caught.value.code == ErrorCode.BAD_METADATA


def test_frame_id_hint_names_the_frame_of_a_rejected_message() -> None:
    assert frame_id_hint(inbound(JPEG, frame_id="f1")) == "f1"
    assert frame_id_hint(inbound(b'{"frame_id": "e1", "image_b64": "@@"}')) is None  # the envelope is broken
    assert frame_id_hint(inbound(JPEG, frame_id="bad id")) is None
