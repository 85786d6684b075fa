"""Property-based tests: whatever bytes and metadata arrive, the envelope parser, the bridge's admission and
the decoder either succeed or refuse with one of the contract's codes; nothing else escapes."""

from __future__ import annotations

import base64
import io
import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from broker.admission import Inbound, admit
from broker.codes import ErrorCode
from broker.contract import parse_envelope
from broker.errors import FrameRejected
from models.errors import ImageError
from models.extract.decode import DecodeLimits, decode_image

# loaded CI machines draw slowly at times: no per-example deadline, no too-slow health check
settings.register_profile("partsight", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("partsight")

CODES = {str(code) for code in ErrorCode}
FRAME_ID_CHARS = string.ascii_letters + string.digits + "-_.:"
LIMIT = 64 * 1024


def small_image(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [
    small_image("JPEG"),
    small_image("JPEG", "L"),
    small_image("PNG"),
    small_image("PNG", "P"),
    small_image("WEBP"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_are_a_bad_envelope(payload: bytes) -> None:
    try:
        envelope = parse_envelope(payload)
    except FrameRejected as exc:
        assert exc.code == ErrorCode.BAD_ENVELOPE and exc.message
    else:
        assert envelope.image


@given(
    st.dictionaries(
        st.sampled_from(["frame_id", "captured_at", "image_b64", "other"]),
        json_values | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        max_size=4,
    )
)
def test_any_json_object_parses_or_is_a_bad_envelope(document: dict[str, object]) -> None:
    try:
        envelope = parse_envelope(json.dumps(document).encode())
    except FrameRejected as exc:
        assert exc.code == ErrorCode.BAD_ENVELOPE
    else:
        assert envelope.image == base64.b64decode(str(document["image_b64"]))


@given(
    st.text(FRAME_ID_CHARS, min_size=1, max_size=64),
    st.binary(min_size=1, max_size=512),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
)
def test_a_valid_envelope_round_trips(frame_id: str, image: bytes, captured_at: str) -> None:
    payload = json.dumps(
        {"frame_id": frame_id, "captured_at": captured_at, "image_b64": base64.b64encode(image).decode()}
    )
    envelope = parse_envelope(payload.encode())
    assert (envelope.frame_id, envelope.captured_at, envelope.image) == (frame_id, captured_at, image)


@given(
    st.binary(max_size=LIMIT + 16),
    st.dictionaries(st.sampled_from(["frame_id", "captured_at", "camera", ""]), st.text(max_size=300), max_size=3),
)
def test_admission_answers_every_message_with_a_request_or_a_code(payload: bytes, properties: dict[str, str]) -> None:
    message = Inbound("partsight/cam/frame", payload, properties)
    try:
        request = admit(message, device="cam", max_payload_bytes=LIMIT, received_at=1.0)
    except FrameRejected as exc:
        assert str(exc.code) in CODES and exc.message
    else:
        assert request.device == "cam" and request.image and request.frame_id


def check_decode(data: bytes) -> None:
    try:
        out = decode_image(data, size=32, limits=DecodeLimits(max_pixels=4_000_000))
    except ImageError as exc:
        assert exc.code in {"unsupported_format", "image_undecodable", "image_too_large"} and exc.message
    else:
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@given(st.binary(max_size=4096))
def test_the_decoder_refuses_arbitrary_bytes_with_a_code(data: bytes) -> None:
    check_decode(data)


@settings(max_examples=300)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8),
    st.integers(min_value=1),
)
def test_damaged_real_images_decode_or_are_refused_with_a_code(
    seed: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed[: max(1, cut % (len(seed) + 1))])
    for position, value in flips:
        data[position % len(data)] = value
    check_decode(bytes(data))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_seeds_themselves_decode(seed: bytes) -> None:
    assert decode_image(seed, size=32).shape == (32, 32, 3)
