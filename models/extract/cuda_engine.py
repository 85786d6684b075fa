"""The GPU engine: JPEGs decoded in batches on the GPU (nvJPEG through torchvision), resized there, and the
backbone run in half precision, channels-last. Only a header check runs on the CPU per frame.

Frames the GPU decoder should not take go through the CPU decoder instead, with the same result a CPU
worker gives: PNG and WebP, CMYK or other unusual JPEG modes, EXIF-rotated JPEGs (the orientation is
honoured on the CPU), and JPEGs without an end-of-image marker (truncated: the CPU decoder names the
error). A batch the GPU decoder refuses is retried frame by frame, so one corrupt frame fails alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.io as tvio

from models.errors import ImageError
from models.extract.decode import DecodeLimits, center_square, decode_image, read_header
from models.extract.features import FeatureExtractor

logger = logging.getLogger(__name__)

GPU_DECODABLE_MODES = ("RGB", "L")
JPEG_END = b"\xff\xd9"


@dataclass(frozen=True, slots=True)
class JpegFrame:
    """A JPEG whose header passed the checks, left compressed for the GPU decoder."""

    data: bytes
    width: int
    height: int


def wants_gpu_decode(data: bytes, limits: DecodeLimits) -> JpegFrame | None:
    """A JpegFrame when the GPU can decode `data` as the CPU would; None when the CPU decoder must.

    Raises the CPU decoder's ImageError for what the header alone already refuses (format, size).
    """
    header = read_header(data, limits=limits)
    if header.format != "JPEG" or header.mode not in GPU_DECODABLE_MODES or header.orientation != 1:
        return None
    if not data.rstrip(b"\x00").endswith(JPEG_END):
        return None
    return JpegFrame(data, header.width, header.height)


def center_crop_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, size, size) float: the centre square, resized (bilinear, antialiased).

    The same geometry as models.extract.decode.resize_center_crop on the CPU, cropped first for the same reason.
    """
    height, width = images.shape[-2:]
    left, top, side = center_square(width, height)
    square = images[:, :, top : top + side, left : left + side]
    return torch.nn.functional.interpolate(
        square.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


class CudaEngine:
    name = "torch-cuda"

    def __init__(self, extractor: FeatureExtractor) -> None:
        if extractor.device.type != "cuda":
            raise ValueError("CudaEngine needs an extractor on a CUDA device")
        self._extractor = extractor
        self.device = str(extractor.device)
        self.input_size = extractor.spec.input_size

    def prepare(self, data: bytes, limits: DecodeLimits) -> JpegFrame | np.ndarray:
        frame = wants_gpu_decode(data, limits)
        return frame if frame is not None else decode_image(data, size=self.input_size, limits=limits)

    @torch.inference_mode()
    def features(self, items: Sequence[Any]) -> list[np.ndarray | ImageError]:
        inputs: list[torch.Tensor | ImageError] = [None] * len(items)  # type: ignore[list-item]
        jpegs = [index for index, item in enumerate(items) if isinstance(item, JpegFrame)]
        for index, decoded in zip(jpegs, self._decode_on_gpu([items[i] for i in jpegs]), strict=True):
            inputs[index] = decoded
        arrays = [index for index, item in enumerate(items) if not isinstance(item, JpegFrame)]
        if arrays:
            host = torch.from_numpy(np.stack([items[i] for i in arrays])).pin_memory()
            on_device = host.to(self._extractor.device, non_blocking=True).permute(0, 3, 1, 2)
            for position, index in enumerate(arrays):
                inputs[index] = on_device[position].float()
        good = [index for index, value in enumerate(inputs) if isinstance(value, torch.Tensor)]
        results: list[np.ndarray | ImageError] = [
            value if isinstance(value, ImageError) else np.empty(0, dtype=np.float32) for value in inputs
        ]
        if good:
            batch = torch.stack([inputs[index] for index in good])  # type: ignore[misc]
            features = self._extractor.from_device_batch(batch).cpu().numpy()
            for row, index in enumerate(good):
                results[index] = features[row]
        return results

    def _decode_on_gpu(self, frames: list[JpegFrame]) -> list[torch.Tensor | ImageError]:
        """Decoded, resized and cropped (3, S, S) float tensors on the GPU, or each frame's ImageError."""
        if not frames:
            return []
        device = self._extractor.device
        payloads = [torch.frombuffer(bytearray(frame.data), dtype=torch.uint8) for frame in frames]
        try:
            decoded: list[torch.Tensor | ImageError] = list(
                tvio.decode_jpeg(payloads, mode=tvio.ImageReadMode.RGB, device=device)
            )
        except RuntimeError:
            logger.info("the GPU decoder refused a batch of %d; decoding its frames one by one", len(frames))
            decoded = [self._decode_one(frame, payload) for frame, payload in zip(frames, payloads, strict=True)]
        out: list[torch.Tensor | ImageError] = [None] * len(frames)  # type: ignore[list-item]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(decoded):
            if isinstance(image, ImageError):
                out[index] = image
            else:
                by_shape.setdefault(tuple(image.shape), []).append(index)
        for indices in by_shape.values():  # frames of one camera share a size: one resize for the group
            group = torch.stack([decoded[i] for i in indices])  # type: ignore[misc]
            for position, image in zip(indices, center_crop_resize(group, self.input_size), strict=True):
                out[position] = image
        return out

    def _decode_one(self, frame: JpegFrame, payload: torch.Tensor) -> torch.Tensor | ImageError:
        try:
            image: torch.Tensor = tvio.decode_jpeg(payload, mode=tvio.ImageReadMode.RGB, device=self._extractor.device)
            return image
        except RuntimeError:
            try:  # the CPU decoder gives the contract's code and message, or decodes what nvJPEG would not
                array = decode_image(frame.data, size=self.input_size)
            except ImageError as exc:
                return exc
            return torch.from_numpy(array).to(self._extractor.device).permute(2, 0, 1)
