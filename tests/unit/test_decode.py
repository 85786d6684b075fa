from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from models.errors import ImageError
from models.extract.decode import DecodeLimits, decode_image, sniff_format


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def half_red_half_blue(width: int = 200, height: int = 100) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_supported_formats_decode_to_the_model_size(fmt: str) -> None:
    out = decode_image(encode(half_red_half_blue(), fmt), size=64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[32, 2, 0] > 200 and out[32, 61, 2] > 200  # left red, right blue survive the centre crop


def test_exif_orientation_is_honoured() -> None:
    image = half_red_half_blue(100, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(encode(image, "JPEG", exif=exif.tobytes()), size=32)
    assert out[2, 16, 0] > 200 and out[29, 16, 2] > 200  # red now on top, blue at the bottom


def test_cmyk_progressive_and_large_jpegs_decode() -> None:
    assert decode_image(encode(half_red_half_blue().convert("CMYK"), "JPEG"), size=32).shape == (32, 32, 3)
    assert decode_image(encode(half_red_half_blue(), "JPEG", progressive=True), size=32).shape == (32, 32, 3)
    assert decode_image(encode(half_red_half_blue(1920, 1080), "JPEG"), size=224).shape == (224, 224, 3)


def test_transparent_palette_and_16_bit_pngs_decode() -> None:
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    out = decode_image(encode(palette, "PNG", transparency=0), size=16)
    assert out.min() == 255  # fully transparent composites onto white
    deep = Image.fromarray(np.full((30, 30), 65535, dtype=np.uint16))
    assert decode_image(encode(deep, "PNG"), size=16).min() == 255


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_oversize_headers_are_refused_before_decoding() -> None:
    with pytest.raises(ImageError) as caught:
        decode_image(png_claiming(50_000, 50_000), size=32)
    assert caught.value.code == "image_too_large"
    with pytest.raises(ImageError) as caught:
        decode_image(encode(half_red_half_blue(300, 300), "PNG"), size=32, limits=DecodeLimits(max_pixels=50_000))
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("cut", [10, 200, -10])
def test_truncated_jpegs_are_undecodable(cut: int) -> None:
    data = encode(half_red_half_blue(), "JPEG")
    with pytest.raises(ImageError) as caught:
        decode_image(data[:cut], size=32)
    assert caught.value.code == "image_undecodable"


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (b"GIF89a....", "GIF"),
        (b"II*\x00....", "TIFF"),
        (b"BM....", "BMP"),
        (b"PK\x03\x04", "ZIP"),
        (b"  <svg xmlns=...>", "markup"),
        (b"\x00\x01\x02", "not a JPEG"),
    ],
)
def test_other_formats_are_unsupported(payload: bytes, name: str) -> None:
    with pytest.raises(ImageError) as caught:
        sniff_format(payload)
    assert caught.value.code == "unsupported_format" and name in caught.value.message


def test_extreme_aspect_ratios_decode() -> None:
    assert decode_image(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), size=16).shape == (16, 16, 3)
    assert decode_image(encode(Image.new("L", (10_000, 1)), "PNG"), size=16).shape == (16, 16, 3)


@pytest.mark.parametrize("size", [(100_000, 1), (1, 65_000), (5_001, 3)])
def test_long_thin_frames_become_their_centre_square_without_blowing_up(size: tuple[int, int]) -> None:
    """A 373-byte 100,000 x 1 PNG used to be scaled to 22,400,000 x 224 pixels before the crop (15 GB)."""
    width, height = size
    frame = Image.new("RGB", size, (0, 0, 255))
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    frame.paste((255, 0, 0), (left, top, left + side, top + side))  # only the centre square is red
    out = decode_image(encode(frame, "PNG"), size=32)
    assert out.shape == (32, 32, 3)
    # the middle is the red square; towards the edges a bilinear resize blends in the blue neighbours
    assert out[16, 16, 0] > 240 and out[16, 16, 2] < 15
    assert out[..., 0].astype(int).mean() > 2 * out[..., 2].astype(int).mean()


def test_a_png_whose_pixel_data_fails_its_crc_is_undecodable() -> None:
    data = bytearray(encode(Image.new("RGB", (40, 30), (10, 120, 200)), "PNG"))
    assert decode_image(bytes(data), size=16).shape == (16, 16, 3)
    idat = data.find(b"IDAT")
    data[idat + 6] ^= 0x01  # one bit of the compressed pixels
    with pytest.raises(ImageError) as caught:
        decode_image(bytes(data), size=16)
    assert (
        caught.value.code == "image_undecodable" and "'IDAT'" in caught.value.message and "CRC" in caught.value.message
    )
