"""Feature recipes: what one forward pass of the frozen backbone is turned into, for the head and the gallery.

A forward pass yields, besides the last layer, the outputs of the backbone's intermediate blocks (earlier
blocks describe shape and texture, which the ImageNet-specialised last layer pools away). The *superset* is
every part a recipe may use, pooled but not normalised: the global mean of six block outputs and 2x2 grids
of two of them. A *recipe* names the parts it keeps and how they are combined:

    each part: (signed square root when `power`) -> L2
    concatenate, divide by sqrt(number of parts)          (every part weighs the same)
    when `center`: subtract the enrolled photos' mean, L2 (the mean is fitted at training time)

`flip` averages each raw part with the horizontally mirrored image's (twice the backbone's work).

Training computes the superset once per photo (cached on disk) and derives every candidate recipe from it
in numpy (`apply_recipe`); serving computes the chosen recipe inside the one graph
(`models.extract.recipe_modules.RecipeModule`: the ONNX export and the torch engines run the same module). This
module imports no torch, so a CPU worker on ONNX Runtime never loads it. The legacy recipe is the last
layer alone, which is what model directories written before recipes were served: they still load and are
answered as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import BackboneError

SUPERSET_VERSION = 1


@dataclass(frozen=True, slots=True)
class Part:
    """One pooled block output: `block` None is the head convolution; `grid` 2 pools a 2x2 grid of cells."""

    name: str
    block: int | None
    channels: int
    grid: int = 1

    @property
    def dim(self) -> int:
        return self.channels * self.grid * self.grid


# EfficientNet-Lite0: the last block of each stage (28x28, 14x14, 14x14, 7x7, 7x7) and the 1280-channel head
PARTS: tuple[Part, ...] = (
    Part("b4", 4, 40),
    Part("b7", 7, 80),
    Part("b10", 10, 112),
    Part("b14", 14, 192),
    Part("b15", 15, 320),
    Part("head", None, 1280),
    Part("b10g2", 10, 112, grid=2),
    Part("b14g2", 14, 192, grid=2),
)
PART_BY_NAME = {part.name: part for part in PARTS}
SUPERSET_DIM = sum(part.dim for part in PARTS)


def superset_slices() -> dict[str, slice]:
    """Where each part lies in a superset row."""
    slices: dict[str, slice] = {}
    start = 0
    for part in PARTS:
        slices[part.name] = slice(start, start + part.dim)
        start += part.dim
    return slices


@dataclass(frozen=True, slots=True)
class FeatureRecipe:
    parts: tuple[str, ...]
    power: bool = False
    center: bool = False
    flip: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.parts if name not in PART_BY_NAME]
        if not self.parts or unknown:
            raise BackboneError(f"a feature recipe needs parts among {', '.join(PART_BY_NAME)}; got {self.parts!r}")

    @property
    def dim(self) -> int:
        return sum(PART_BY_NAME[name].dim for name in self.parts)

    @property
    def label(self) -> str:
        extras = [flag for flag, on in (("power", self.power), ("center", self.center), ("flip", self.flip)) if on]
        return "+".join(self.parts) + (" | " + ",".join(extras) if extras else "")

    def record(self) -> dict[str, Any]:
        return {
            "parts": list(self.parts),
            "power": self.power,
            "center": self.center,
            "flip": self.flip,
            "superset_version": SUPERSET_VERSION,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FeatureRecipe:
        """The recipe a manifest records; BackboneError for one this release cannot make, or no recipe at all."""
        try:
            superset = int(record.get("superset_version", SUPERSET_VERSION))
            parts = tuple(str(name) for name in record["parts"])
            flags = {name: bool(record.get(name, False)) for name in ("power", "center", "flip")}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a key missing, a value of the wrong kind
            raise BackboneError(f"a feature recipe record that is not one ({type(exc).__name__}: {exc})") from exc
        if superset != SUPERSET_VERSION:
            raise BackboneError(f"feature recipe of superset version {record.get('superset_version')!r} is unknown")
        return cls(parts=parts, **flags)


LEGACY = FeatureRecipe(parts=("head",))  # the last layer, pooled and L2-normalised: the first model directories

# The recipe used when there are too few photos to cross-validate (one per product): at one photo per product it
# beat the last layer on both data sets (Fashion-MNIST 58.2% against 55.6%, digits 60.7% against 55.6%)
DEFAULT = FeatureRecipe(parts=("b10", "b14", "b15", "head"), power=True, center=True)
# with the 2x2 grids: chosen by cross-validation on both data sets from 5 photos per product up (once on
# Fashion-MNIST the last layer with the transform was chosen instead, within 0.2 points)
GRID = FeatureRecipe(parts=("b10", "b14", "b15", "head", "b10g2", "b14g2"), power=True, center=True)

# What training's cross-validation chooses among: only what won on both data sets of bench.accuracy. Dropped
# after that run: the last layer alone (today's features, never chosen), the last layer with the transform
# (chosen once, on one data set only) and the shallow blocks 4 and 7 (never chosen).
CANDIDATES: tuple[FeatureRecipe, ...] = (DEFAULT, GRID)


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    result: np.ndarray = x / np.maximum(norm, 1e-12)
    return result


def combine_parts(superset: np.ndarray, recipe: FeatureRecipe) -> np.ndarray:
    """Superset rows (N, SUPERSET_DIM) -> the recipe's vector before centring: each part normalised, joined."""
    rows = np.asarray(superset, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != SUPERSET_DIM:
        raise ValueError(f"expected (N, {SUPERSET_DIM}) superset rows, got {rows.shape}")
    slices = superset_slices()
    pieces = []
    for name in recipe.parts:
        part = rows[:, slices[name]]
        if recipe.power:
            part = np.sign(part) * np.sqrt(np.abs(part))
        pieces.append(_l2(part))
    joined: np.ndarray = np.concatenate(pieces, axis=1) / np.float32(np.sqrt(len(pieces)))
    return joined.astype(np.float32)


def fit_center(combined: np.ndarray, recipe: FeatureRecipe) -> np.ndarray | None:
    """The enrolled photos' mean in the recipe's space (None when the recipe does not centre)."""
    if not recipe.center:
        return None
    mean: np.ndarray = np.asarray(combined, dtype=np.float64).mean(axis=0).astype(np.float32)
    return mean


def finish(combined: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Centre on the enrolled mean (when there is one) and L2-normalise: the recipe's final vector."""
    x = np.asarray(combined, dtype=np.float32)
    if center is not None:
        x = x - center
    return _l2(x).astype(np.float32)


SHIFT_BLOCK_ROWS = 4096  # rows uncentred_mean and recentre read at a time (float64: 100 MB at 3,120 features)


def _lengths_before_centring(block: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(N,) for finished rows `block` (float64) centred on `center`: the s > 0 with |s f + center| = 1 (uncentred)."""
    along = block @ center
    lengths: np.ndarray = -along + np.sqrt(np.maximum(along**2 - center @ center + 1.0, 0.0))
    return lengths


def uncentred_mean(finished: np.ndarray, center: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The mean of `finished` rows (those `rows` marks, else all) before centring, float64, from the mean they were
    centred on.

    A recipe's vector before centring, u, has unit length (combine_parts), so a finished row f = (u - center) /
    |u - center| gives back u = s f + center for the one positive s with |u| = 1: s = -(f.c) + sqrt((f.c)^2 - |c|^2
    + 1). Summed a block of rows at a time (no copy of them all)."""
    mean = np.asarray(center, dtype=np.float64)
    picked = np.arange(len(finished)) if rows is None else np.flatnonzero(rows)
    total = np.zeros(len(mean))
    for start in range(0, len(picked), SHIFT_BLOCK_ROWS):
        block = np.asarray(finished[picked[start : start + SHIFT_BLOCK_ROWS]], dtype=np.float64)
        total += _lengths_before_centring(block, mean) @ block
    result: np.ndarray = total / max(len(picked), 1) + mean if len(picked) else mean.copy()
    return result


def recentre(finished: np.ndarray, old: np.ndarray, new: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows finished on the mean `old`, finished on `new` instead (as `dtype`): what `finish` gives the same vectors
    before centring, to float32's precision, a block of rows at a time (no float64 copy of them all)."""
    old64, new64 = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    result: np.ndarray = np.empty((len(finished), len(old64)), dtype=dtype)
    for start in range(0, len(finished), SHIFT_BLOCK_ROWS):
        block = np.asarray(finished[start : start + SHIFT_BLOCK_ROWS], dtype=np.float64)
        uncentred = _lengths_before_centring(block, old64)[:, None] * block + old64
        result[start : start + len(block)] = _l2(uncentred - new64)
    return result


def apply_recipe(superset: np.ndarray, recipe: FeatureRecipe, center: np.ndarray | None) -> np.ndarray:
    """Superset rows -> the recipe's final feature vectors, as the served graph computes them."""
    return finish(combine_parts(superset, recipe), center)
