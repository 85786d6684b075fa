"""Feature extraction on a batch of decoded images: GPU in half precision when present, CPU otherwise."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.backbones import BackboneSpec, FeatureBackbone, load_network
from models.errors import BackboneError

logger = logging.getLogger(__name__)

TRACE_TOLERANCE = 1e-3


class _Pooled(torch.nn.Module):
    def __init__(self, backbone: FeatureBackbone) -> None:
        super().__init__()
        self.network = backbone.network

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return FeatureBackbone(self.network)(batch)


def compile_graph(backbone: FeatureBackbone, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A frozen TorchScript graph of the backbone, checked against eager on `example`.

    The eager forward re-enters Python for every layer; in a worker whose other threads want the GIL it
    slowed from 68 to 0.4 frames/s on a 2-core box, the frozen graph kept 24-39. torch.jit is deprecated
    upstream, so any failure falls back to eager (ONNX Runtime is the planned CPU engine).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            with torch.inference_mode():
                graph = torch.jit.freeze(torch.jit.trace(_Pooled(backbone).eval(), example))  # type: ignore[no-untyped-call]
                expected, actual = backbone(example).float(), graph(example).float()
    except Exception as exc:
        logger.warning("TorchScript tracing failed (%s); running the backbone eagerly", exc)
        return backbone
    error = float((expected - actual).abs().max())
    if error > TRACE_TOLERANCE:
        logger.warning("traced backbone differs from eager by %.2g; running eagerly", error)
        return backbone
    traced: Callable[[torch.Tensor], torch.Tensor] = graph
    return traced


def choose_device(preference: str = "auto") -> torch.device:
    """`auto` picks CUDA when a GPU is usable, else CPU; `cuda` without a GPU is an error."""
    if preference not in ("auto", "cpu", "cuda") and not preference.startswith("cuda:"):
        raise BackboneError(f"device must be auto, cpu or cuda[:N], got {preference!r}")
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if preference == "auto" else preference)
    if preference == "auto":
        return torch.device("cpu")
    raise BackboneError(f"device {preference!r} requested but CUDA is not available")


class FeatureExtractor:
    """uint8 images (N, H, W, 3) -> L2-normalised float32 features (N, D).

    `half` defaults to True on CUDA (half precision, channels-last) and False on CPU.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        *,
        weights: Path | None = None,
        device: str = "auto",
        cpu_threads: int | None = 1,
        half: bool | None = None,
    ) -> None:
        self.spec = spec
        self.device = choose_device(device)
        if self.device.type == "cpu" and cpu_threads:
            torch.set_num_threads(cpu_threads)
        network, self.weights_path = load_network(spec, weights)
        self.half = self.device.type == "cuda" if half is None else half
        network = network.to(self.device).to(memory_format=torch.channels_last)
        if self.half:
            network = network.half()
        backbone = FeatureBackbone(network)
        dtype = torch.float16 if self.half else torch.float32
        self._mean = torch.tensor(spec.mean, dtype=dtype, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=dtype, device=self.device).view(1, 3, 1, 1)
        example = torch.zeros(2, 3, spec.input_size, spec.input_size, dtype=dtype, device=self.device)
        self._forward = compile_graph(backbone, example.contiguous(memory_format=torch.channels_last))
        logger.info("backbone %s on %s (half precision: %s)", spec.name, self.device, self.half)

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got shape {images.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).to(dtype=self._mean.dtype)
        batch = ((batch - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        features = self._forward(batch).float()
        features = torch.nn.functional.normalize(features, dim=1)
        return features.cpu().numpy()
