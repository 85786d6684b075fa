"""Export a backbone to ONNX once per model directory, proven equal to torch on real photos before it is kept.

The exported graph takes what the worker has after decoding, uint8 images (N, H, W, 3), and returns the
model's feature recipe (models.extract.recipe), L2-normalised (N, D): normalisation, layout change, the blocks'
pooling, the transform and its fitted mean all run inside ONNX Runtime, so a CPU worker needs neither
torch nor per-frame numpy work around the model.

torch's TorchScript exporter leaves the module it traced altered, so the export works on a deep copy and
the reference features are computed before it, from the untouched network.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.errors import BackboneError
from models.extract.backbones import BackboneSpec
from models.extract.recipe import LEGACY, FeatureRecipe

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ONNX_FILE = "backbone.onnx"
OPSET = 17
# measured: 4e-7 on EfficientNet-Lite0; anything near this bound means the export changed the model
EXPORT_TOLERANCE = 1e-4


def images_to_features(
    spec: BackboneSpec,
    network: torch.nn.Module,
    recipe: FeatureRecipe = LEGACY,
    center: np.ndarray | None = None,
    *,
    superset: bool = False,
) -> torch.nn.Module:
    """uint8 (N, H, W, 3) -> the recipe's L2-normalised float32 features (N, D), or raw superset rows, as one module."""
    # torch (and the torch modules of the recipe) only when exporting: a worker on ONNX imports onnx_session
    import torch  # noqa: PLC0415

    from models.extract.recipe_modules import RecipeModule, SupersetModule  # noqa: PLC0415

    features = SupersetModule(network, flip=recipe.flip) if superset else RecipeModule(network, recipe, center)

    class ImagesToFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            mean, std = self.get_buffer("mean"), self.get_buffer("std")
            batch = (images.permute(0, 3, 1, 2).float() - mean) / std
            result: torch.Tensor = self.features(batch)
            return result

    return ImagesToFeatures().eval()


def onnx_session(path: Path, *, threads: int = 1) -> object:
    """An ONNX Runtime CPU session with `threads` intra-op threads, run sequentially (one core per lane)."""
    try:
        import onnxruntime as ort  # noqa: PLC0415  # optional: BackboneError below when it is missing
    except ImportError as exc:
        raise BackboneError("onnxruntime is not installed; install it or set PARTSIGHT_ENGINE=torch") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise BackboneError(f"{path}: ONNX Runtime cannot load the exported backbone: {exc}") from exc


def export_backbone(
    spec: BackboneSpec,
    network: torch.nn.Module,
    path: Path,
    check_images: np.ndarray,
    *,
    recipe: FeatureRecipe = LEGACY,
    center: np.ndarray | None = None,
    superset: bool = False,
) -> float:
    """Write `network` with its recipe as an ONNX graph to `path`; returns the largest feature difference on
    `check_images`.

    Raises BackboneError (and leaves no file) when ONNX Runtime's features differ from torch's by more
    than EXPORT_TOLERANCE on the check images, which should be real photos in the model's input size.
    """
    import torch  # noqa: PLC0415  # exporting only: a worker on ONNX imports this module without torch

    if check_images.ndim != 4 or check_images.dtype != np.uint8 or len(check_images) == 0:
        raise ValueError(f"check images must be a non-empty uint8 (N, H, W, 3) batch, got {check_images.shape}")
    reference_module = images_to_features(spec, network, recipe, center, superset=superset)
    with torch.inference_mode():
        expected = reference_module(torch.from_numpy(np.ascontiguousarray(check_images))).numpy()
    exported = images_to_features(spec, copy.deepcopy(network), recipe, center, superset=superset).float()
    example = torch.zeros(1, spec.input_size, spec.input_size, 3, dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                exported,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            )
        session = onnx_session(path)
        actual = session.run(None, {"images": np.ascontiguousarray(check_images)})[0]  # type: ignore[attr-defined]
        difference = float(np.abs(np.asarray(actual) - expected).max())
        if difference > EXPORT_TOLERANCE:
            raise BackboneError(
                f"the ONNX export of {spec.name} differs from torch by {difference:.2g} (limit {EXPORT_TOLERANCE})"
            )
    except BackboneError:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise BackboneError(f"exporting {spec.name} to ONNX failed: {exc}") from exc
    logger.info(
        "exported %s to ONNX; largest difference from torch on %d photos: %.2g",
        spec.name,
        len(check_images),
        difference,
    )
    return difference
