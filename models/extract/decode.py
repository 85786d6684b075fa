"""Bounded image decoding: sniff the format, refuse oversize headers before decoding, then produce the model input.

JPEGs are decoded with Pillow's draft mode, which lets libjpeg scale by 1/2, 1/4 or 1/8 while decoding,
so a 1080p frame never costs a full-resolution decode when the model wants 224 pixels.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import ImageError

UNSUPPORTED_FORMAT = "unsupported_format"
IMAGE_UNDECODABLE = "image_undecodable"
IMAGE_TOO_LARGE = "image_too_large"

DEFAULT_MAX_PIXELS = 40_000_000
EXIF_ORIENTATION = 0x0112

T = TypeVar("T")

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)
_OTHER_MAGIC = (
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"PK\x03\x04", "ZIP"),
    (b"%PDF", "PDF"),
    (b"<", "markup (HTML/SVG/XML)"),
)


def sniff_format(data: bytes) -> str:
    """JPEG, PNG or WEBP by their magic bytes; ImageError(unsupported_format) for anything else."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    stripped = data.lstrip()
    for magic, name in _OTHER_MAGIC:
        if stripped.startswith(magic):
            raise ImageError(UNSUPPORTED_FORMAT, f"{name} is not supported; send JPEG, PNG or WebP")
    if not data:
        raise ImageError(UNSUPPORTED_FORMAT, "payload is empty")
    raise ImageError(UNSUPPORTED_FORMAT, "payload is not a JPEG, PNG or WebP image")


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background for images with transparency; 16-bit and palette images normalised."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        return background.convert("RGB")
    return image.convert("RGB")


def center_square(width: int, height: int) -> tuple[int, int, int]:
    """(left, top, side) of the centred square a frame is cropped to before it is resized to the model size."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """The centre square, resized to `size` x `size`.

    Cropped before resizing: scaling the shorter side first would blow a 100,000 x 1 frame up to
    22,400,000 x 224 pixels (15 GB) on the way.
    """
    left, top, side = center_square(*image.size)
    return image.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0
    )


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What a frame's header says, read without decoding its pixels."""

    format: str
    width: int
    height: int
    mode: str
    orientation: int


def check_png_chunks(data: bytes) -> None:
    """ImageError(image_undecodable) when a PNG chunk fails its CRC: Pillow does not check the pixel data's, and
    a damaged frame would be answered from damaged pixels. A truncated PNG is left for the decoder to refuse."""
    at = 8
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        end = at + 8 + length
        if end + 4 > len(data):
            return
        if zlib.crc32(data[at + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            name = kind.decode("latin-1")
            raise ImageError(IMAGE_UNDECODABLE, f"PNG chunk {name!r} at byte {at} fails its CRC: the data is damaged")
        if kind == b"IEND":
            return
        at = end + 4


def _open_checked(data: bytes, limits: DecodeLimits) -> tuple[str, Image.Image]:
    fmt = sniff_format(data)
    if fmt == "PNG":
        check_png_chunks(data)
    opened = Image.open(io.BytesIO(data), formats=[fmt])
    width, height = opened.size
    if width < 1 or height < 1:
        raise ImageError(IMAGE_UNDECODABLE, f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageError(IMAGE_TOO_LARGE, f"image is {width}x{height} pixels, the limit is {limits.max_pixels} pixels")
    return fmt, opened


def _load_rgb(data: bytes, limits: DecodeLimits, draft_size: int) -> Image.Image:
    """Checked, decoded (JPEGs at the smallest libjpeg scale covering `draft_size`), upright, RGB."""
    fmt, opened = _open_checked(data, limits)
    if fmt == "JPEG":
        opened.draft("RGB", (draft_size, draft_size))
    opened.load()
    return _to_rgb(ImageOps.exif_transpose(opened))


def _guarded(data: bytes, action: Callable[[], T]) -> T:
    """Runs `action` on `data`, turning Pillow's many failure types into ImageError with the contract's codes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return action()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(IMAGE_TOO_LARGE, f"image refused as a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(IMAGE_UNDECODABLE, f"{_format_hint(data)} data could not be decoded: {exc}") from exc


def read_header(data: bytes, *, limits: DecodeLimits = DecodeLimits()) -> ImageHeader:
    """Format, size, mode and EXIF orientation, with the same checks and codes as decode_image, no pixels decoded."""

    def read() -> ImageHeader:
        fmt, opened = _open_checked(data, limits)
        orientation = int(opened.getexif().get(EXIF_ORIENTATION, 1)) if fmt == "JPEG" else 1
        return ImageHeader(fmt, opened.size[0], opened.size[1], opened.mode, orientation)

    return _guarded(data, read)


def decode_image(data: bytes, *, size: int, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode `data` into a `size` x `size` x 3 uint8 array, EXIF orientation honoured.

    Raises ImageError with code unsupported_format, image_too_large or image_undecodable.
    """

    return _guarded(data, lambda: np.asarray(resize_center_crop(_load_rgb(data, limits, size), size), dtype=np.uint8))


def decode_photo(data: bytes, *, size_hint: int, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """The whole photo as an RGB image, EXIF orientation honoured; JPEGs decoded at a reduced scale that
    still covers `size_hint` pixels on each side (for transforms that need the photo before the crop)."""

    return _guarded(data, lambda: _load_rgb(data, limits, size_hint))


def _format_hint(data: bytes) -> str:
    try:
        return sniff_format(data)
    except ImageError:
        return "image"
