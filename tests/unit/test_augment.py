"""Each synthetic-image transform: same size, deterministic under a seed, and a real change to the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from models.errors import DatasetError
from models.train.augment import (
    ALL_TRANSFORMS,
    TRANSFORMS,
    Augmenter,
    BackgroundReplacer,
    backgrounds_from_folder,
    border_colour,
    parse_transforms,
    product_mask,
)


def product_photo(width: int = 160, height: int = 120) -> Image.Image:
    """A red valve body with a blue handle on a light grey bench, off centre (not symmetric)."""
    image = Image.new("RGB", (width, height), (225, 225, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 30, 90, 90), fill=(200, 30, 30))
    draw.rectangle((85, 50, 140, 62), fill=(30, 40, 190))
    return image


def changed_share(a: Image.Image, b: Image.Image) -> float:
    """Share of pixels that moved by more than 10 levels in some channel (a blur changes only the edges)."""
    difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(axis=2)
    return float((difference > 10).mean())


@pytest.mark.parametrize("name", ALL_TRANSFORMS)
def test_every_transform_keeps_the_size_repeats_under_a_seed_and_changes_the_photo(name: str) -> None:
    photo = product_photo()
    transform = BackgroundReplacer() if name == "background" else TRANSFORMS[name]
    first = transform(photo, np.random.default_rng(7))
    again = transform(photo, np.random.default_rng(7))
    assert first.size == photo.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert changed_share(first, photo) > 0.02, f"{name} left the photo almost as it was"
    if name != "reflect":  # a mirror has no randomness unless upside-down is enabled
        others = [transform(photo, np.random.default_rng(seed)) for seed in range(8, 12)]
        assert any(not np.array_equal(np.asarray(first), np.asarray(o)) for o in others)


def test_reflection_mirrors_and_can_turn_upside_down() -> None:
    photo = product_photo()
    mirrored = TRANSFORMS["reflect"](photo, np.random.default_rng(0))
    assert np.array_equal(np.asarray(mirrored), np.asarray(photo)[:, ::-1])
    from models.train.augment import reflect

    flipped = reflect(photo, np.random.default_rng(0), vertical_probability=1.0)
    assert np.array_equal(np.asarray(flipped), np.asarray(photo)[::-1, ::-1])


def test_the_product_is_cut_out_and_put_on_another_background() -> None:
    photo = product_photo()
    mask = np.asarray(product_mask(photo)) > 128
    assert mask[60, 60] and mask[56, 120] and not mask[5, 5] and not mask[110, 150]
    black = Image.new("RGB", (64, 64), (0, 0, 0))
    result = np.asarray(BackgroundReplacer(backgrounds=[black])(photo, np.random.default_rng(1)))
    assert tuple(result[60, 60]) == (200, 30, 30) and tuple(result[56, 120]) == (30, 40, 190)  # product kept
    assert result[5, 5].max() < 10 and result[110, 150].max() < 10  # the bench is gone
    assert border_colour(photo) == (225, 225, 220)


def test_background_photos_come_from_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no background photos"):
        backgrounds_from_folder(tmp_path)
    Image.new("RGB", (50, 40), (10, 200, 10)).save(tmp_path / "grass.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xffnot really")
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        backgrounds_from_folder(tmp_path)
    (tmp_path / "broken.jpg").unlink()
    (tmp_path / "notes.txt").write_text("not a photo")
    [grass] = backgrounds_from_folder(tmp_path)
    assert grass.size == (50, 40)
    result = np.asarray(BackgroundReplacer(backgrounds=[grass])(product_photo(), np.random.default_rng(0)))
    assert tuple(result[5, 5]) == (10, 200, 10)


def test_the_augmenter_is_reproducible_per_photo_and_configurable() -> None:
    photo = product_photo()
    augmenter = Augmenter(copies=5, seed=3)
    first, again = augmenter.variants(photo, 0), augmenter.variants(photo, 0)
    assert len(first) == 5 and all(v.size == photo.size for v in first)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True))
    other_photo = augmenter.variants(photo, 1)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other_photo, strict=True))
    assert all(changed_share(v, photo) > 0.02 for v in first)
    assert Augmenter(names=(), copies=3).variants(photo, 0) == []
    assert parse_transforms("all") == ALL_TRANSFORMS and parse_transforms("none") == ()
    assert parse_transforms("Rotate, colour") == ("rotate", "colour")
    with pytest.raises(DatasetError, match="unknown transform"):
        parse_transforms("rotate,sepia")
    with pytest.raises(DatasetError):
        Augmenter(copies=-1)
