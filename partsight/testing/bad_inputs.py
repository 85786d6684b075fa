"""A corpus of named inputs, valid and hostile, each with the answer the service must give.

Used by the integration test that sends every case through the real stack, by the property tests as
seeds, and by `bench/fuzz_decode.py` as its starting corpus. `expect` is "result", an error code, or
"dropped" (no answer: a message on a topic that is not a frame topic); `counted_by` names the process
whose metric counts the refusal.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

RESULT = "result"
DROPPED = "dropped"
PAYLOAD_LIMIT = 2 * 1024 * 1024  # PARTSIGHT_MAX_PAYLOAD_BYTES of the integration stack


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes = field(repr=False)
    expect: str
    counted_by: str | None = None  # "bridge" or "worker" for errors
    user_properties: dict[str, str] = field(default_factory=dict)
    device: str | None = None  # default: a device of its own, named after the case
    topic_suffix: str = "frame"  # the topic levels after the device


@cache
def photo() -> Image.Image:
    """A real photo (scikit-learn's sample), 640x480."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg")).resize((640, 480))


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(**options: object) -> bytes:
    return encoded(photo(), "JPEG", quality=90, **options)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(jpeg())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def corrupt_huffman() -> bytes:
    """A JPEG whose Huffman tables are overwritten: the scan cannot be decoded."""
    data = bytearray(jpeg())
    at = 0
    while (at := data.find(b"\xff\xc4", at + 1)) != -1:
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        data[at + 5 : at + 2 + length] = b"\x00" * (length - 3)  # every code count zero, no symbols
    return bytes(data)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(photo(), "JPEG", quality=90, exif=exif.tobytes())


def png_16bit_transparent() -> bytes:
    grey = np.asarray(photo().convert("L"), dtype=np.uint16) * 257
    return encoded(Image.fromarray(grey), "PNG", transparency=0)  # 16-bit greyscale with a tRNS chunk


def png_palette_transparent() -> bytes:
    palette = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encoded(palette, "PNG", transparency=0)


def png_bad_crc() -> bytes:
    data = bytearray(encoded(photo().resize((64, 48)), "PNG"))
    idat = data.find(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    return bytes(data)


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.jpg", jpeg())
    return buffer.getvalue()


def envelope(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def cases() -> list[Case]:
    good = jpeg()
    b64 = base64.b64encode(good).decode()
    small = photo().resize((64, 48))
    return [
        # valid images of every kind a camera or phone sends: all answered
        Case("baseline-jpeg", good, RESULT),
        Case("progressive-jpeg", jpeg(progressive=True), RESULT),
        Case("cmyk-jpeg", encoded(photo().convert("CMYK"), "JPEG", quality=90), RESULT),
        Case("greyscale-jpeg", encoded(photo().convert("L"), "JPEG"), RESULT),
        Case("exif-rotated-jpeg", exif_rotated(), RESULT),
        Case("png-16bit-transparent", png_16bit_transparent(), RESULT),
        Case("png-palette-transparent", png_palette_transparent(), RESULT),
        Case("png-rgba", encoded(photo().convert("RGBA"), "PNG"), RESULT),
        Case("webp", encoded(photo(), "WEBP"), RESULT),
        Case("one-by-one-png", encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), RESULT),
        Case("hundred-thousand-by-one-png", encoded(Image.new("RGB", (100_000, 1), (9, 9, 9)), "PNG"), RESULT),
        Case("envelope-valid", envelope(frame_id="env-ok", image_b64=b64), RESULT),
        Case("unicode-device", good, RESULT, device="kamera-straße-ü-相机"),
        # broken images: the worker answers with a code
        *(
            Case(f"truncated-jpeg-{pct}pct", good[: len(good) * pct // 100], "image_undecodable", "worker")
            for pct in (5, 30, 60, 95)
        ),
        Case("corrupt-huffman-tables", corrupt_huffman(), "image_undecodable", "worker"),
        Case("jpeg-header-then-garbage", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "image_undecodable", "worker"),
        Case("png-bad-crc", png_bad_crc(), "image_undecodable", "worker"),
        Case("png-claims-50000x50000", png_claiming(50_000, 50_000), "image_too_large", "worker"),
        Case("jpeg-claims-50000x50000", jpeg_claiming(50_000, 50_000), "image_too_large", "worker"),
        # formats we do not take
        Case("gif", encoded(small, "GIF"), "unsupported_format", "worker"),
        Case("tiff", encoded(small, "TIFF"), "unsupported_format", "worker"),
        Case("bmp", encoded(small, "BMP"), "unsupported_format", "worker"),
        Case(
            "svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "unsupported_format", "worker"
        ),
        Case("html", b"<!doctype html><html><body>not an image</body></html>", "unsupported_format", "worker"),
        Case("zip", zip_file(), "unsupported_format", "worker"),
        Case("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "unsupported_format", "worker"),
        # refused by the bridge before any queue
        Case("empty-payload", b"", "unsupported_format", "bridge"),
        Case("oversized-payload", b"\xff\xd8\xff" + b"\x00" * PAYLOAD_LIMIT, "payload_too_large", "bridge"),
        Case("envelope-not-json", b"{not json", "bad_envelope", "bridge"),
        Case("envelope-not-utf8", b'{"image_b64": "\xff\xfe\xfd"}', "bad_envelope", "bridge"),
        Case("envelope-bad-base64", envelope(frame_id="b64", image_b64="@@not base64@@"), "bad_envelope", "bridge"),
        Case("envelope-image-not-a-string", envelope(image_b64=12345), "bad_envelope", "bridge"),
        Case("envelope-frame-id-not-a-string", envelope(frame_id=7, image_b64=b64), "bad_envelope", "bridge"),
        Case("envelope-a-list", b"[1, 2, 3]", "unsupported_format", "worker"),
        Case(
            "envelope-oversized-image",
            envelope(image_b64=base64.b64encode(b"\xff\xd8\xff" + b"\x00" * PAYLOAD_LIMIT).decode()),
            "payload_too_large",
            "bridge",
        ),
        Case("frame-id-10kb", good, "bad_metadata", "bridge", user_properties={"frame_id": "f" * 10_000}),
        Case("frame-id-with-spaces", good, "bad_metadata", "bridge", user_properties={"frame_id": "a b"}),
        Case("captured-at-garbage", good, "bad_metadata", "bridge", user_properties={"captured_at": "yesterday"}),
        # not a frame topic: nobody to answer, counted as unknown_topic
        Case("extra-topic-levels", good, DROPPED, "bridge", topic_suffix="extra/frame"),
    ]
