"""A served model: the verified model directory plus the engine that computes its features, ready for batches.

Engine choice (`engine`, `device`):
- a GPU (device `cuda`, or `auto` with CUDA usable): torch on CUDA with GPU JPEG decoding;
- otherwise `auto` and `onnxruntime` take the model directory's ONNX graph (listed, with its sha256, in the
  manifest); `auto` falls back to torch with a warning for a directory trained before graphs were exported,
  `onnxruntime` refuses it;
- `torch` always runs the backbone on torch, and checks its weights are the ones the head was trained on.
The ONNX path never imports torch, which keeps a CPU worker's memory and start-up small.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.answerer import Answerer
from models.answer.head import Decision
from models.answer.line_scope import LineScope
from models.bundle import ModelBundle, load_model
from models.errors import ArtifactError, BackboneError, ImageError
from models.extract.backbones import BackboneSpec, get_backbone
from models.extract.engines import ENGINE_CHOICES, Engine, OnnxEngine, RecentredEngine, TorchEngine
from models.store.versions import file_sha256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recognizer:
    bundle: ModelBundle
    engine: Engine
    spec: BackboneSpec
    answerer: Answerer

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        weights: Path | None = None,
        device: str = "auto",
        engine: str = "auto",
        cpu_threads: int = 1,
    ) -> Recognizer:
        """Verify the directory, then build the engine for the backbone it names."""
        if engine not in ENGINE_CHOICES:
            raise BackboneError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
        bundle = load_model(model_dir)
        spec = get_backbone(str(bundle.backbone["name"]))
        if bundle.recipe.parts == ("head",) and bundle.head.feature_dim != spec.feature_dim:
            raise ArtifactError(
                f"{bundle.path}: head expects {bundle.head.feature_dim}-d features, "
                f"{spec.name} gives {spec.feature_dim}"
            )
        built = _build_engine(bundle, spec, weights=weights, device=device, engine=engine, cpu_threads=cpu_threads)
        logger.info("serving model %s version %s on %s (%s)", bundle.name, bundle.version, built.name, built.device)
        answerer = Answerer(bundle.head, bundle.gallery, bundle.novelty)
        return cls(bundle=bundle, engine=built, spec=spec, answerer=answerer)

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def features(self, images: np.ndarray) -> np.ndarray:
        """Features of decoded (N, S, S, 3) uint8 images."""
        rows = self.engine.features(list(images))
        for row in rows:
            if isinstance(row, ImageError):
                raise row
        return np.stack(rows)  # type: ignore[arg-type]

    def classify(
        self, features: np.ndarray, *, matches: int = 3, allowed: Sequence[LineScope | np.ndarray | None] | None = None
    ) -> list[Decision]:
        """The head's decision for each feature row, with its novelty and up to `matches` nearest enrolled photos;
        a row with a mask in `allowed` (its line's) is answered among those products only."""
        return self.answerer.answer(features, matches=matches, allowed=allowed)


def _cuda_usable(device: str) -> bool:
    if device == "cpu":
        return False
    if device == "auto" and not Path("/dev/nvidiactl").exists():
        return False  # no NVIDIA driver: do not even import torch
    import torch  # noqa: PLC0415  # only where a GPU may be: a worker on ONNX never loads torch

    return bool(torch.cuda.is_available())


def _build_engine(
    bundle: ModelBundle, spec: BackboneSpec, *, weights: Path | None, device: str, engine: str, cpu_threads: int
) -> Engine:
    if engine != "onnxruntime" and (device.startswith("cuda") or _cuda_usable(device)):
        from models.extract.cuda_engine import CudaEngine  # noqa: PLC0415  # torch and torchvision: GPU workers only

        return CudaEngine(_torch_extractor(bundle, spec, weights=weights, device=device, cpu_threads=cpu_threads))
    graph = _onnx_graph(bundle)
    if engine == "onnxruntime" or (engine == "auto" and graph is not None):
        if graph is None:
            raise ArtifactError(f"{bundle.path}: no ONNX graph in this model directory; retrain, or use engine torch")
        try:
            return _in_rows_space(bundle, OnnxEngine(graph, input_size=spec.input_size, threads=cpu_threads))
        except BackboneError:
            if engine == "onnxruntime":
                raise
            logger.warning("ONNX Runtime is unusable here; running the backbone on torch", exc_info=True)
    elif engine == "auto":
        logger.warning("%s has no ONNX graph (trained before graphs were exported); using torch", bundle.path)
    return TorchEngine(_torch_extractor(bundle, spec, weights=weights, device="cpu", cpu_threads=cpu_threads))


def _in_rows_space(bundle: ModelBundle, engine: Engine) -> Engine:
    """The graph's engine, its features finished on the rows' mean where a consolidation re-centred them (the torch
    engines centre on `bundle.center` themselves)."""
    if bundle.graph_center is None or bundle.center is None:
        return engine
    logger.info("version %s re-centred its rows: the graph's features are finished on their mean", bundle.version)
    return RecentredEngine(engine, graph_center=bundle.graph_center, center=bundle.center)


def _onnx_graph(bundle: ModelBundle) -> Path | None:
    record: dict[str, Any] = bundle.manifest.get("engines", {}).get("onnxruntime", {})
    name = record.get("file")
    return bundle.path / str(name) if name else None  # its sha256 was verified with the rest of the directory


def _torch_extractor(
    bundle: ModelBundle, spec: BackboneSpec, *, weights: Path | None, device: str, cpu_threads: int
) -> Any:
    from models.extract.features import FeatureExtractor  # noqa: PLC0415  # torch: only the torch engines need it

    own = bundle.backbone.get("weights_file")  # a tuned version's own weights, verified with the rest of it
    extractor = FeatureExtractor(
        spec,
        weights=bundle.path / str(own) if own else weights,
        device=device,
        cpu_threads=cpu_threads,
        recipe=bundle.recipe,
        center=bundle.center,
    )
    expected = bundle.backbone.get("weights_sha256")
    if expected and file_sha256(extractor.weights_path) != expected:
        raise ArtifactError(
            f"{bundle.path}: trained on {spec.name} weights {expected[:12]}..., "
            f"but {extractor.weights_path} differs; point PARTSIGHT_BACKBONE_WEIGHTS at the trained weights"
        )
    return extractor
