"""Feature extraction on a batch of decoded images: GPU in half precision when present, CPU otherwise."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.errors import BackboneError
from models.extract.backbones import BackboneSpec, load_network
from models.extract.recipe import LEGACY, SUPERSET_DIM, FeatureRecipe
from models.extract.recipe_modules import RecipeModule, SupersetModule

logger = logging.getLogger(__name__)

# largest feature difference allowed between the frozen graph and eager; half precision folds batch norm
# into fp16 weights (measured on an H100: 1.4e-3), float32 stays near 1e-6
TRACE_TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2}


def compile_graph(module: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A frozen TorchScript graph of `module` (backbone and recipe), checked against eager on `example`.

    The eager forward re-enters Python for every layer; in a worker whose other threads want the GIL it
    slowed from 68 to 0.4 frames/s on a 2-core box, the frozen graph kept 24-39. torch.jit is deprecated
    upstream, so any failure falls back to eager; CPU workers use ONNX Runtime instead (models.extract.engines).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # the trace reads the feature map's height and width as constants: right, since the input size is
            # fixed by the backbone (and the batch dimension is sliced, never read); the check below compares
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            with torch.inference_mode():
                graph = torch.jit.freeze(torch.jit.trace(module.eval(), example))  # type: ignore[no-untyped-call]
                expected, actual = module(example).float(), graph(example).float()
    except Exception as exc:
        logger.warning("TorchScript tracing failed (%s); running the backbone eagerly", exc)
        return module
    error = float((expected - actual).abs().max())
    if error > TRACE_TOLERANCE.get(example.dtype, 1e-3):
        logger.warning("traced backbone differs from eager by %.2g; running eagerly", error)
        return module
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
    """uint8 images (N, H, W, 3) -> the recipe's L2-normalised float32 features (N, D).

    `half` defaults to True on CUDA (half precision, channels-last) and False on CPU. With `superset` it
    gives the raw superset rows training caches instead (models.extract.recipe), whatever the recipe.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        *,
        weights: Path | None = None,
        device: str = "auto",
        cpu_threads: int | None = 1,
        half: bool | None = None,
        recipe: FeatureRecipe = LEGACY,
        center: np.ndarray | None = None,
        superset: bool = False,
    ) -> None:
        self.spec = spec
        self.recipe = recipe
        self.superset = superset
        self.device = choose_device(device)
        if cpu_threads:
            # on a GPU too: torch's CPU thread pool spins after each parallel region, and eight GPU workers
            # with 16 spinning threads each burned 37 CPU-ms per frame on a 16-core H100 box (measured)
            torch.set_num_threads(cpu_threads)
        network, self.weights_path = load_network(spec, weights)
        self.half = self.device.type == "cuda" if half is None else half
        network = network.to(self.device).to(memory_format=torch.channels_last)
        if self.half:
            network = network.half()
        module: torch.nn.Module = SupersetModule(network) if superset else RecipeModule(network, recipe, center)
        dtype = torch.float16 if self.half else torch.float32
        self._mean = torch.tensor(spec.mean, dtype=dtype, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=dtype, device=self.device).view(1, 3, 1, 1)
        example = torch.zeros(2, 3, spec.input_size, spec.input_size, dtype=dtype, device=self.device)
        self._forward = compile_graph(module.eval(), example.contiguous(memory_format=torch.channels_last))
        logger.info("backbone %s on %s (half precision: %s)", spec.name, self.device, self.half)

    @property
    def feature_dim(self) -> int:
        return SUPERSET_DIM if self.superset else self.recipe.dim

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got shape {images.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        return self.from_device_batch(batch.permute(0, 3, 1, 2)).cpu().numpy()

    @torch.inference_mode()
    def from_device_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) already on this extractor's device -> float32 features (or superset rows), still there."""
        batch = batch.to(dtype=self._mean.dtype)
        batch = ((batch - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        return self._forward(batch).float()
