"""Feature recipes: the numpy side (models.extract.recipe) against the torch side (models.extract.recipe_modules),
the ONNX export and the feature extractor, on the real backbone and real photos (scikit-learn's samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from sklearn.datasets import load_sample_images

from models.errors import BackboneError
from models.extract.backbones import BackboneSpec, get_backbone, load_network
from models.extract.decode import resize_center_crop
from models.extract.recipe import (
    CANDIDATES,
    LEGACY,
    PART_BY_NAME,
    PARTS,
    SUPERSET_DIM,
    SUPERSET_VERSION,
    FeatureRecipe,
    apply_recipe,
    combine_parts,
    fit_center,
    superset_slices,
)
from models.extract.recipe_modules import RecipeModule, SupersetModule

# a recipe that uses every kind of part: early blocks, the head, a 2x2 grid; power and centring on
MIXED = FeatureRecipe(parts=("b4", "b10", "head", "b14g2"), power=True, center=True)


# ---------------------------------------------------------------- pure: no network


def test_superset_slices_tile_the_superset_exactly() -> None:
    slices = superset_slices()
    assert list(slices) == [part.name for part in PARTS]
    covered = np.zeros(SUPERSET_DIM, dtype=int)
    for name, where in slices.items():
        assert where.stop - where.start == PART_BY_NAME[name].dim
        covered[where] += 1
    assert covered.min() == covered.max() == 1  # every column once: no gap, no overlap
    assert SUPERSET_DIM == 40 + 80 + 112 + 192 + 320 + 1280 + 112 * 4 + 192 * 4 == 3240
    assert slices["b4"] == slice(0, 40) and slices["head"] == slice(744, 2024)


def test_recipe_records_round_trip_and_label_dim() -> None:
    for recipe in (*CANDIDATES, FeatureRecipe(parts=("b7", "b14g2"), flip=True)):
        record = json.loads(json.dumps(recipe.record()))
        assert record["superset_version"] == SUPERSET_VERSION
        assert FeatureRecipe.from_record(record) == recipe
    assert LEGACY.dim == 1280 and LEGACY.label == "head"
    assert MIXED.dim == 40 + 112 + 1280 + 768
    assert MIXED.label == "b4+b10+head+b14g2 | power,center"
    # an old record without the flags reads as plain
    assert FeatureRecipe.from_record({"parts": ["head"]}) == LEGACY


def test_unknown_parts_and_versions_are_refused() -> None:
    with pytest.raises(BackboneError, match="b99"):
        FeatureRecipe(parts=("head", "b99"))
    with pytest.raises(BackboneError):
        FeatureRecipe(parts=())
    with pytest.raises(BackboneError, match="b99"):
        FeatureRecipe.from_record({"parts": ["b99"]})
    with pytest.raises(BackboneError, match="superset version"):
        FeatureRecipe.from_record({**LEGACY.record(), "superset_version": SUPERSET_VERSION + 1})


def test_recipe_module_refuses_a_centring_recipe_without_its_mean_or_a_wrong_mean() -> None:
    stand_in = torch.nn.Identity()  # the constructor never runs the network
    with pytest.raises(BackboneError, match="fitted mean"):
        RecipeModule(stand_in, MIXED, None)
    with pytest.raises(BackboneError, match="shape"):
        RecipeModule(stand_in, MIXED, np.zeros(MIXED.dim - 1, np.float32))
    RecipeModule(stand_in, FeatureRecipe(parts=("head",), power=True), None)  # no centring: no mean needed


def test_combine_parts_by_hand() -> None:
    """Each part (signed square root when `power`) L2-normalised, joined, divided by sqrt(number of parts)."""
    rows = np.zeros((1, SUPERSET_DIM), np.float32)
    slices = superset_slices()
    rows[0, slices["b4"].start] = -4.0  # b4 = (-4, 0, ..., 0)
    rows[0, slices["b7"].start : slices["b7"].start + 2] = [9.0, 16.0]  # b7 = (9, 16, 0, ...)
    recipe = FeatureRecipe(parts=("b4", "b7"), power=True, center=True)
    combined = combine_parts(rows, recipe)
    expected = np.zeros((1, 120), np.float32)
    expected[0, 0] = -1.0 / np.sqrt(2)  # sign(-4) * sqrt(4) = -2 -> -1
    expected[0, 40:42] = np.array([3.0, 4.0]) / 5 / np.sqrt(2)  # sqrt: (3, 4) -> (0.6, 0.8)
    np.testing.assert_allclose(combined, expected, atol=1e-7)
    plain = combine_parts(rows, FeatureRecipe(parts=("b7",)))
    np.testing.assert_allclose(plain[0, :2], np.array([9.0, 16.0]) / np.hypot(9, 16), atol=1e-7)
    # centring: minus the mean, then L2
    center = fit_center(np.concatenate([combined, -combined]) + 1.0, recipe)
    assert center is not None
    np.testing.assert_allclose(center, np.ones(120), atol=1e-6)
    assert fit_center(combined, FeatureRecipe(parts=("b4", "b7"))) is None
    final = apply_recipe(rows, recipe, np.full(120, 0.1, np.float32))
    shifted = expected - 0.1
    np.testing.assert_allclose(final, shifted / np.linalg.norm(shifted), atol=1e-6)
    with pytest.raises(ValueError, match="superset rows"):
        combine_parts(rows[:, :-1], recipe)


# ---------------------------------------------------------------- the real network


@pytest.fixture(scope="module")
def spec() -> BackboneSpec:
    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def network(spec: BackboneSpec) -> torch.nn.Module:
    net, _ = load_network(spec)
    return net


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Three real 224x224 uint8 photos: the china and flower samples, and the china one mirrored."""
    china, flower = (Image.fromarray(p) for p in load_sample_images().images)
    images = [china, flower, ImageOps.mirror(china).rotate(10)]
    return np.stack([np.asarray(resize_center_crop(image, 224)) for image in images])


def normalised(photos: np.ndarray, spec: BackboneSpec) -> torch.Tensor:
    batch = torch.from_numpy(photos).permute(0, 3, 1, 2).float()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (batch - mean) / std


@pytest.fixture(scope="module")
def superset_rows(network: torch.nn.Module, photos: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    with torch.inference_mode():
        rows: np.ndarray = SupersetModule(network).eval()(normalised(photos, spec)).numpy()
    return rows


def test_legacy_recipe_on_superset_rows_is_the_old_feature_and_the_recipe_module_matches_numpy(
    network: torch.nn.Module, photos: np.ndarray, spec: BackboneSpec, superset_rows: np.ndarray
) -> None:
    batch = normalised(photos, spec)
    assert superset_rows.shape == (3, SUPERSET_DIM) and superset_rows.dtype == np.float32
    with torch.inference_mode():
        pooled = network.extract_features(batch).mean((2, 3))  # type: ignore[operator]
        old = torch.nn.functional.normalize(pooled, dim=1).numpy()
        legacy_module = RecipeModule(network, LEGACY, None).eval()(batch).numpy()
    head_part = superset_rows[:, superset_slices()["head"]]
    np.testing.assert_allclose(head_part, pooled.numpy(), rtol=1e-5, atol=1e-5)  # the raw head part, unnormalised
    np.testing.assert_allclose(apply_recipe(superset_rows, LEGACY, None), old, atol=1e-5)
    np.testing.assert_allclose(legacy_module, old, atol=1e-5)
    assert float(old[0] @ old[1]) < 0.9  # different photos: not a degenerate comparison

    # the 2x2 grid of a 14x14 block splits it into four 7x7 cells: their mean is the block's global mean
    # (channel-major layout: each channel's four cells side by side)
    grid = superset_rows[:, superset_slices()["b10g2"]].reshape(3, 112, 4).mean(axis=2)
    np.testing.assert_allclose(grid, superset_rows[:, superset_slices()["b10"]], rtol=1e-4, atol=1e-5)

    combined = combine_parts(superset_rows, MIXED)
    center = fit_center(combined, MIXED)
    assert center is not None and center.shape == (MIXED.dim,)
    expected = apply_recipe(superset_rows, MIXED, center)
    with torch.inference_mode():
        mixed_module = RecipeModule(network, MIXED, center).eval()(batch).numpy()
    assert mixed_module.shape == (3, MIXED.dim)
    np.testing.assert_allclose(mixed_module, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    # centring and the power transform change the vector: the comparison above tested them
    uncentred = apply_recipe(superset_rows, FeatureRecipe(parts=MIXED.parts), None)
    assert float(np.abs(uncentred - expected).max()) > 1e-2

    # flip: the raw parts averaged with the mirrored batch's, in both modules
    flipped = FeatureRecipe(parts=("b7", "head"), power=True, flip=True)
    with torch.inference_mode():
        flip_rows = SupersetModule(network, flip=True).eval()(batch).numpy()
        flip_module = RecipeModule(network, flipped, None).eval()(batch).numpy()
    np.testing.assert_allclose(flip_module, apply_recipe(flip_rows, flipped, None), atol=1e-5)
    assert float(np.abs(flip_rows - superset_rows).max()) > 1e-3


def test_the_onnx_export_and_the_extractor_compute_the_recipe(
    tmp_path: Path, network: torch.nn.Module, photos: np.ndarray, spec: BackboneSpec, superset_rows: np.ndarray
) -> None:
    from models.extract.features import FeatureExtractor
    from models.extract.onnx_export import EXPORT_TOLERANCE, export_backbone, onnx_session

    recipe = FeatureRecipe(parts=("b10", "b14", "head", "b14g2"), power=True, center=True)
    center = fit_center(combine_parts(superset_rows, recipe), recipe)
    path = tmp_path / "recipe.onnx"
    difference = export_backbone(spec, network, path, photos, recipe=recipe, center=center)
    assert 0 <= difference < EXPORT_TOLERANCE
    session = onnx_session(path)
    from_onnx = session.run(None, {"images": photos})[0]  # type: ignore[attr-defined]
    with torch.inference_mode():
        from_module = RecipeModule(network, recipe, center).eval()(normalised(photos, spec)).numpy()
    assert from_onnx.shape == (3, recipe.dim)
    np.testing.assert_allclose(from_onnx, from_module, atol=1e-4)
    np.testing.assert_allclose(from_onnx, apply_recipe(superset_rows, recipe, center), atol=1e-4)

    extractor = FeatureExtractor(spec, device="cpu", recipe=recipe, center=center)
    assert extractor.feature_dim == recipe.dim
    np.testing.assert_allclose(extractor(photos), from_onnx, atol=1e-4)


def test_centre_shift_recovers_how_far_the_rows_mean_lies_from_the_one_they_were_centred_on() -> None:
    from models.extract.recipe import finish, uncentred_mean

    def centre_shift(finished: np.ndarray, center: np.ndarray, rows: np.ndarray | None = None) -> float:
        return float(np.linalg.norm(uncentred_mean(finished, center, rows) - center))

    rng = np.random.default_rng(0)
    recipe = FeatureRecipe(parts=("b10", "b14", "head"), power=True, center=True)
    trained_rows = rng.gamma(2.0, 1.0, (200, SUPERSET_DIM))
    other_kind = rng.gamma(2.0, 1.0, (100, SUPERSET_DIM)) * (rng.random(SUPERSET_DIM) < 0.3)  # enrolled since
    combined = combine_parts(np.concatenate([trained_rows, other_kind]), recipe)
    trained = fit_center(combined[:200], recipe)
    assert trained is not None
    stored = finish(combined, trained).astype(np.float16)  # as a version's rows keep them
    assert centre_shift(stored[:200], trained) == pytest.approx(0.0, abs=2e-3)
    moved = float(np.linalg.norm(combined.mean(axis=0) - trained))
    assert moved > 0.1
    assert centre_shift(stored, trained) == pytest.approx(moved, abs=2e-3)
    enrolled = np.arange(300) >= 200
    assert centre_shift(stored, trained, enrolled) == pytest.approx(
        float(np.linalg.norm(combined[200:].mean(axis=0) - trained)), abs=2e-3
    )


def test_recentre_finishes_rows_on_another_mean_as_finish_would_from_the_vectors_before_centring() -> None:
    from models.extract.recipe import finish, recentre, uncentred_mean

    rng = np.random.default_rng(1)
    recipe = FeatureRecipe(parts=("b10", "b14", "head"), power=True, center=True)
    combined = combine_parts(rng.gamma(2.0, 1.0, (300, SUPERSET_DIM)), recipe)
    old, new = fit_center(combined[:100], recipe), fit_center(combined, recipe)
    assert old is not None and new is not None and np.linalg.norm(new - old) > 0.01
    finished = finish(combined, old)
    np.testing.assert_allclose(recentre(finished, old, new), finish(combined, new), atol=1e-5)
    stored = finished.astype(np.float16)  # as a version keeps its rows, and as they are written again
    again = recentre(stored, old, new, np.float16)
    assert again.dtype == np.float16
    np.testing.assert_allclose(again.astype(np.float32), finish(combined, new), atol=2e-3)
    np.testing.assert_allclose(uncentred_mean(finished, old), combined.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(uncentred_mean(finished, old, np.arange(300) < 100), old, atol=1e-5)
    np.testing.assert_allclose(recentre(finished, old, old), finished, atol=1e-5)  # the same mean: the same rows
