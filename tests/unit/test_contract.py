from __future__ import annotations

import base64
import json

import msgpack
import pytest

from broker.codes import ErrorCode
from broker.contract import (
    SCHEMA_VERSION,
    FrameRequest,
    Timings,
    encode,
    error_message,
    looks_like_envelope,
    parse_envelope,
    result_message,
    rfc3339,
    validate_frame_id,
)
from broker.errors import FrameRejected


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"


def test_task_kwargs_round_trip_through_msgpack_with_bytes_intact() -> None:
    request = FrameRequest(
        device="cam",
        frame_id="f1",
        image=b"\xff\xd8\x00\x01",
        received_at=12.5,
        captured_at="2026-01-01T00:00:00Z",
        response_topic="r/t",
        correlation_data=b"\x00\x01",
    )
    wire = msgpack.packb(request.to_task_kwargs(), use_bin_type=True)
    assert FrameRequest.from_task_kwargs(msgpack.unpackb(wire, raw=False)) == request


def test_task_kwargs_from_json_carry_base64() -> None:
    kwargs = {"device": "cam", "frame_id": "f", "image": base64.b64encode(b"abc").decode(), "received_at": 1}
    assert FrameRequest.from_task_kwargs(kwargs).image == b"abc"


def test_envelope_is_parsed() -> None:
    payload = json.dumps(
        {
            "frame_id": "f-1",
            "captured_at": "2026-11-23T01:02:03Z",
            "image_b64": base64.b64encode(b"\xff\xd8\xffdata").decode(),
        }
    ).encode()
    assert looks_like_envelope(b"  " + payload)
    envelope = parse_envelope(payload)
    assert (envelope.frame_id, envelope.captured_at, envelope.image) == (
        "f-1",
        "2026-11-23T01:02:03Z",
        b"\xff\xd8\xffdata",
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b"{\xff\xfe}",
        b"[1]",
        b'{"image_b64": 5}',
        b'{"image_b64": ""}',
        b'{"image_b64": "@@"}',
        b'{"image_b64": "AAAA", "frame_id": 7}',
        b'{"image_b64": "AAAA", "frame_id": "' + b"x" * 10_000 + b'"}',
        b'{"image_b64": "AAAA", "captured_at": "yesterday"}',
        b'{"image_b64": "AAAA", "frame_id": "has space"}',
    ],
)
def test_bad_envelopes_are_refused_with_bad_envelope(payload: bytes) -> None:
    with pytest.raises(FrameRejected) as caught:
        parse_envelope(payload)
    assert caught.value.code == ErrorCode.BAD_ENVELOPE


@pytest.mark.parametrize("value", ["", "a b", "é", "x" * 129, 5, None])
def test_frame_ids_must_be_short_printable_ascii(value: object) -> None:
    with pytest.raises(FrameRejected):
        validate_frame_id(value)


def test_result_and_error_messages_carry_the_contract_fields() -> None:
    request = FrameRequest(device="cam", frame_id="f1", image=b"", received_at=0.0)
    result = result_message(
        request=request,
        status="recognized",
        product="p1",
        category="c1",
        confidence=0.91234567,
        category_confidence=0.99,
        top_k=[{"product": "p1", "category": "c1", "score": 0.91}],
        catalog={"product": "p1", "name": "Valve"},
        model_name="m",
        model_version="v1",
        timings=Timings(queue=1, decode=2, features=3, classify=0.1, total=6.1),
        completed_at=1.0,
    )
    assert {
        "schema",
        "frame_id",
        "device",
        "status",
        "product",
        "category",
        "confidence",
        "top_k",
        "catalog",
        "model",
        "timings_ms",
        "received_at",
        "completed_at",
    } <= set(result)
    assert result["schema"] == SCHEMA_VERSION and result["confidence"] == 0.912346
    assert (result["novelty"], result["matches"]) == (None, [])  # a model without a gallery
    assert json.loads(encode(result)) == result
    error = error_message("cam", None, ErrorCode.IMAGE_TOO_LARGE, "too big", 0.0)
    assert error["error"] == {"code": "image_too_large", "message": "too big"} and error["frame_id"] is None


def test_a_result_carries_novelty_and_the_nearest_enrolled_photos_rounded() -> None:
    request = FrameRequest(device="cam", frame_id="f1", image=b"", received_at=0.0)
    matches = [
        {"product": "p1", "photo": "c1/p1/0001.png", "similarity": 0.91234567},
        {"product": "p2", "photo": "c1/p2/0007.jpg", "similarity": 0.5},
    ]
    result = result_message(
        request=request,
        status="unknown",
        product=None,
        category=None,
        confidence=0.4,
        category_confidence=0.6,
        top_k=[{"product": "p1", "category": "c1", "score": 0.4}],
        novelty=0.123456789,
        matches=matches,
        catalog=None,
        model_name="m",
        model_version="v1",
        timings=Timings(queue=1, decode=2, features=3, classify=0.1, total=6.1),
        completed_at=1.0,
    )
    assert result["novelty"] == 0.123457
    assert result["matches"] == [
        {"product": "p1", "photo": "c1/p1/0001.png", "similarity": 0.912346},
        {"product": "p2", "photo": "c1/p2/0007.jpg", "similarity": 0.5},
    ]
    assert list(result).index("top_k") < list(result).index("novelty") < list(result).index("catalog")
    assert json.loads(encode(result)) == result
