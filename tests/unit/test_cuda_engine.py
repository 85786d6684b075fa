"""The GPU engine: its CPU-side logic runs everywhere; the CUDA part runs where a GPU is (skipped in CI)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from models.errors import ImageError
from models.extract.cuda_engine import JpegFrame, center_crop_resize, wants_gpu_decode
from models.extract.decode import DecodeLimits, decode_image, resize_center_crop
from models.recognizer import Recognizer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (640, 480), index: int = 0) -> Image.Image:
    return Image.fromarray(load_sample_images().images[index]).resize(size)


def test_only_plain_complete_jpegs_go_to_the_gpu_decoder() -> None:
    limits = DecodeLimits()
    plain = jpeg(photo())
    frame = wants_gpu_decode(plain, limits)
    assert isinstance(frame, JpegFrame) and (frame.width, frame.height) == (640, 480)
    assert isinstance(wants_gpu_decode(jpeg(photo().convert("L")), limits), JpegFrame)
    exif = Image.Exif()
    exif[0x0112] = 6
    assert wants_gpu_decode(jpeg(photo(), exif=exif.tobytes()), limits) is None  # rotation: the CPU honours it
    assert wants_gpu_decode(jpeg(photo().convert("CMYK")), limits) is None
    assert wants_gpu_decode(plain[: len(plain) // 2], limits) is None  # truncated: the CPU names the error
    png = io.BytesIO()
    photo().save(png, "PNG")
    assert wants_gpu_decode(png.getvalue(), limits) is None
    with pytest.raises(ImageError) as caught:  # what the header refuses is refused before any GPU work
        wants_gpu_decode(plain, DecodeLimits(max_pixels=1000))
    assert caught.value.code == "image_too_large"
    with pytest.raises(ImageError) as caught:
        wants_gpu_decode(b"GIF89a" + b"\0" * 100, limits)
    assert caught.value.code == "unsupported_format"


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (480, 640), (300, 300)])
def test_the_gpu_resize_has_the_cpu_geometry(size: tuple[int, int]) -> None:
    """Same crop of the same picture: close to the CPU decoder's output (resampling filters differ slightly)."""
    image = photo(size, index=1)
    cpu = np.asarray(resize_center_crop(image, 224), dtype=np.float32)
    chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    gpu_like = center_crop_resize(chw, 224)[0].permute(1, 2, 0).numpy()
    assert gpu_like.shape == (224, 224, 3)
    assert float(np.abs(gpu_like - cpu).mean()) < 4.0  # of 255; a shifted or mirrored crop is tens off


@needs_cuda
def test_the_gpu_engine_answers_like_the_cpu_engine_and_fails_frames_alone(model_store: Path) -> None:
    gpu = Recognizer.load(model_store, device="cuda")
    cpu = Recognizer.load(model_store, device="cpu")
    assert gpu.engine.name == "torch-cuda" and cpu.engine.name == "onnxruntime"
    limits = DecodeLimits()
    frames = [jpeg(photo((640, 480), 0)), jpeg(photo((1920, 1080), 1)), jpeg(photo((640, 480), 1))]
    corrupt = bytearray(frames[0])
    table = corrupt.index(b"\xff\xc4") + 5  # the first Huffman table's 16 code-length counts
    corrupt[table : table + 16] = b"\xff" * 16  # more codes than any table can hold: no decoder takes it
    png = io.BytesIO()
    photo((320, 240), 0).save(png, "PNG")
    payloads = [*frames, bytes(corrupt), png.getvalue()]
    prepared = []
    for data in payloads:
        try:
            prepared.append(gpu.engine.prepare(data, limits))
        except ImageError as exc:
            prepared.append(exc)
    assert isinstance(prepared[0], JpegFrame) and isinstance(prepared[4], np.ndarray)
    rows = gpu.engine.features([p for p in prepared if not isinstance(p, ImageError)])
    reference = cpu.features(np.stack([decode_image(d, size=224) for d in frames]))
    for row, expected in zip(rows[:3], reference, strict=True):
        assert isinstance(row, np.ndarray)
        assert float(row @ expected) > 0.98  # cosine: half precision and GPU resampling, same picture
    assert isinstance(rows[4], np.ndarray) and rows[4].shape == (cpu.bundle.recipe.dim,)
    assert isinstance(rows[3], ImageError) and rows[3].code == "image_undecodable"  # failed alone, with its code
