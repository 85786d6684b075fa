"""The drawn look-alike parts: a catalog up to 10,000 products and beyond, neighbours one detail apart, every
photo taken anew and the same for the same seed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import DatasetError
from models.train import parts


def test_the_catalog_reaches_ten_thousand_products_with_never_seen_ones_beyond() -> None:
    catalog = parts.catalog(10_000)
    assert len(catalog) == 10_000 and parts.CAPACITY >= 12_000
    assert {record["category"] for record in catalog.values()} == {family.category for family in parts.FAMILIES}
    assert len({record["sku"] for record in catalog.values()}) == 10_000
    beyond = {item.product for item in parts.parts(100, start=10_000)}
    assert not beyond & set(catalog)  # never-seen look-alikes are not in the catalog
    with pytest.raises(DatasetError, match="holds"):
        parts.part(parts.CAPACITY)


def test_neighbours_in_a_family_differ_in_one_detail() -> None:
    families = len(parts.FAMILIES)
    for index in range(0, 64):
        this, other = parts.part(index), parts.part(index + families)
        assert this.family is other.family
        changed = [detail for detail in this.details if this.details[detail] != other.details[detail]]
        assert 1 <= len(changed) <= 2, (this.name, other.name)  # a carry changes a second one
    first, second = parts.part(0), parts.part(families)
    assert [d for d in first.details if first.details[d] != second.details[d]] == ["holes"]


@pytest.mark.parametrize("index", range(8))
def test_look_alikes_share_most_of_their_shape_and_still_differ(index: int) -> None:
    """A hole more, a groove: the same outline, mostly, and never the same drawing."""
    this = np.asarray(parts.silhouette(parts.part(index)))
    other = np.asarray(parts.silhouette(parts.part(index + len(parts.FAMILIES))))
    overlap = ((this > 0) & (other > 0)).sum() / ((this > 0) | (other > 0)).sum()
    assert overlap > 0.6 and not np.array_equal(this, other), overlap


def test_a_photo_is_the_same_for_the_same_seed_and_taken_anew_otherwise() -> None:
    item = parts.part(3)
    first = np.asarray(parts.photo(item, 0, seed=7))
    assert first.shape == (parts.PHOTO_SIZE, parts.PHOTO_SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(first, np.asarray(parts.photo(item, 0, seed=7)))
    for other in (parts.photo(item, 1, seed=7), parts.photo(item, 0, seed=8)):
        assert np.abs(first.astype(int) - np.asarray(other).astype(int)).mean() > 10


def test_a_photo_is_the_one_every_measured_figure_was_drawn_with() -> None:
    """Pinned at aa024a3, before `nudge`: a change in the order of the photo's draws changes every bench figure."""
    picture = parts.photo(parts.part(5), 4, seed=1, size=64)
    assert hashlib.sha256(picture.tobytes()).hexdigest() == (
        "d5ad67184ba0504df62263419dce65008b53f0e728be31dc5d2b8380224b8d0b"
    )


def test_a_nudged_frame_is_the_same_photo_with_the_part_moved_and_fresh_noise() -> None:
    item, size = parts.part(5), 128
    photo = np.asarray(parts.photo(item, 4, seed=1, size=size)).astype(int)
    background = photo[:6, :6]  # a corner: the part never reaches it at this scale

    def frame(nudge: parts.Nudge) -> np.ndarray:
        return np.asarray(parts.photo(item, 4, seed=1, size=size, nudge=nudge)).astype(int)

    still = frame(parts.Nudge(noise_seed=1))  # only the sensor's noise is new
    assert not np.array_equal(still, photo) and np.abs(still - photo).mean() < 6
    assert not np.array_equal(frame(parts.Nudge(noise_seed=2)), still)
    moved = frame(parts.Nudge(degrees=5.0, shift=(4, -3), light=1.05, noise_seed=1))
    other_photo = np.asarray(parts.photo(item, 5, seed=1, size=size)).astype(int)
    assert np.abs(moved - still).mean() > 1  # the part moved
    assert np.abs(moved - photo).mean() < np.abs(other_photo - photo).mean() / 2  # and is still that photo's part
    assert (
        np.abs(frame(parts.Nudge(degrees=5.0, shift=(4, -3), noise_seed=1))[:6, :6] - background).mean() < 6
    )  # the background stays put
    far = frame(parts.Nudge(shift=(10_000, -10_000), noise_seed=1))  # kept inside the photo, not an error
    assert np.array_equal(far, frame(parts.Nudge(shift=(size, -size), noise_seed=1)))
    assert not np.array_equal(far, still)


def test_the_folders_are_what_training_and_the_camera_read(tmp_path: Path) -> None:
    written = parts.export_training_folder(tmp_path / "train", products=10, per_product=2)
    assert len(written) == 20
    assert {path.parent.parent.name for path in written} == {item.family.category for item in parts.parts(10)}
    assert written[0].relative_to(tmp_path / "train").parts == ("plates", "plate-0000", "photo-000.jpg")
    with Image.open(written[0]) as image:
        assert image.format == "JPEG" and image.size == (parts.PHOTO_SIZE, parts.PHOTO_SIZE)
    unseen = parts.export_camera_folder(tmp_path / "camera", products=2, per_product=3, start=10)
    assert [product for _, product in unseen] == ["bracket-0001"] * 3 + ["ring-0001"] * 3
    assert written[0].read_bytes() != (tmp_path / "camera" / "ring-0001-000.jpg").read_bytes()
    with pytest.raises(DatasetError, match="at least one photo"):
        parts.export_training_folder(tmp_path / "none", products=1, per_product=0)
