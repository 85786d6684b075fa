"""The torch side of feature recipes (models.extract.recipe): one forward pass, the blocks a recipe needs, pooled.

`SupersetModule` gives the raw parts training caches; `RecipeModule` gives a recipe's final vector and is
what the ONNX export traces and the torch and GPU engines run, so every engine computes the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.errors import BackboneError
from models.extract.recipe import PART_BY_NAME, PARTS, FeatureRecipe


def _grid_pool(feature_map: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * grid * grid): the mean of each cell (cells as adaptive pooling cuts them, which
    overlap by a row on odd sizes), channel-major. Sliced by hand: the ONNX exporter cannot take adaptive
    pooling on a graph whose batch size is dynamic."""
    height, width = int(feature_map.shape[2]), int(feature_map.shape[3])
    cells = []
    for row in range(grid):
        top, bottom = (row * height) // grid, -((-(row + 1) * height) // grid)
        for column in range(grid):
            left, right = (column * width) // grid, -((-(column + 1) * width) // grid)
            cells.append(feature_map[:, :, top:bottom, left:right].mean(dim=(2, 3)))
    return torch.stack(cells, dim=2).flatten(1)


def block_outputs(network: torch.nn.Module, batch: torch.Tensor, wanted: Sequence[int | None]) -> dict[int | None, Any]:
    """One forward pass of an EfficientNet(-Lite), keeping the outputs of the `wanted` blocks (None: the head)."""
    keep = set(wanted)
    net: Any = network
    x = net._swish(net._bn0(net._conv_stem(batch)))
    outputs: dict[int | None, Any] = {}
    last_needed = max((index for index in keep if index is not None), default=-1)
    for index, block in enumerate(net._blocks):
        x = block(x)
        if index in keep:
            outputs[index] = x
        if None not in keep and index >= last_needed:
            return outputs
    if None in keep:
        outputs[None] = net._swish(net._bn1(net._conv_head(x)))
    return outputs


def raw_parts(network: torch.nn.Module, batch: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """The named parts of a normalised (N, 3, S, S) batch, pooled, not normalised."""
    parts = [PART_BY_NAME[name] for name in names]
    outputs = block_outputs(network, batch, [part.block for part in parts])
    pooled = []
    for part in parts:
        feature_map = outputs[part.block]
        pooled.append(feature_map.mean(dim=(2, 3)) if part.grid == 1 else _grid_pool(feature_map, part.grid))
    return pooled


class SupersetModule(torch.nn.Module):
    """Normalised (N, 3, S, S) batch -> raw superset rows (N, SUPERSET_DIM): what training caches."""

    def __init__(self, network: torch.nn.Module, *, flip: bool = False) -> None:
        super().__init__()
        self.network = network
        self.flip = flip

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        names = [part.name for part in PARTS]
        rows = torch.cat(raw_parts(self.network, batch, names), dim=1)
        if self.flip:
            rows = (rows + torch.cat(raw_parts(self.network, batch.flip(3), names), dim=1)) / 2
        return rows


class RecipeModule(torch.nn.Module):
    """Normalised (N, 3, S, S) batch -> the recipe's final, L2-normalised features (N, D): the served graph."""

    def __init__(self, network: torch.nn.Module, recipe: FeatureRecipe, center: np.ndarray | None) -> None:
        super().__init__()
        self.network = network
        self.recipe = recipe
        if recipe.center and center is None:
            raise BackboneError("a centring recipe needs its fitted mean")
        mean = np.zeros(recipe.dim, np.float32) if center is None else np.asarray(center, np.float32)
        if mean.shape != (recipe.dim,):
            raise BackboneError(f"the recipe's mean has shape {mean.shape}, expected ({recipe.dim},)")
        self.register_buffer("center", torch.from_numpy(mean.copy()))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        parts = raw_parts(self.network, batch, self.recipe.parts)
        if self.recipe.flip:
            mirrored = raw_parts(self.network, batch.flip(3), self.recipe.parts)
            parts = [(a + b) / 2 for a, b in zip(parts, mirrored, strict=True)]
        pieces = []
        for raw in parts:
            part = raw.float()
            if self.recipe.power:
                part = torch.sign(part) * torch.sqrt(torch.abs(part))
            pieces.append(torch.nn.functional.normalize(part, dim=1, eps=1e-12))
        joined = torch.cat(pieces, dim=1) / float(np.sqrt(len(pieces)))
        if self.recipe.center:
            joined = joined - self.get_buffer("center")
        return torch.nn.functional.normalize(joined, dim=1, eps=1e-12)
