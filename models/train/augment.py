"""Synthetic images: named, seeded, configurable transforms that widen a handful of product photos.

Each transform takes an RGB image and a numpy Generator and returns a new RGB image of the same size;
the same seed gives the same image. An `Augmenter` chains them: every synthetic copy applies each enabled
transform with its probability (at least one always), seeded by (seed, photo index, copy index), so a
training run is reproducible and a photo's copies never depend on which other photos are in the folder.

Background replacement cuts the product out of its photo (pixels that differ from the colour of the
photo's border, cleaned by a morphological closing) and composites it onto a crop of another background:
photos from a folder (`backgrounds_from_folder`), or the built-in set (scikit-learn's two sample photos
plus generated gradients, stripes and noise), so an air-gapped site needs nothing else.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageEnhance, ImageFilter, ImageOps
from sklearn.datasets import load_sample_images

from models.errors import DatasetError

logger = logging.getLogger(__name__)

BACKGROUND_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def border_colour(image: Image.Image, width: int = 4) -> tuple[int, int, int]:
    """The median colour of the image's outer `width` pixels: the photo's background, for a product shot."""
    array = np.asarray(image.convert("RGB"))
    strips = (array[:width], array[-width:], array[:, :width], array[:, -width:])
    edge = np.concatenate([strip.reshape(-1, 3) for strip in strips])
    r, g, b = np.median(edge, axis=0).astype(int).tolist()
    return r, g, b


def translate(image: Image.Image, rng: np.random.Generator, *, max_fraction: float = 0.12) -> Image.Image:
    """Shift by up to `max_fraction` of the size in each direction; the uncovered area takes the border colour."""
    width, height = image.size
    dx = round(rng.uniform(-max_fraction, max_fraction) * width) or 1
    dy = round(rng.uniform(-max_fraction, max_fraction) * height)
    return image.transform(image.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy), fillcolor=border_colour(image))


def reflect(image: Image.Image, rng: np.random.Generator, *, vertical_probability: float = 0.0) -> Image.Image:
    """A mirror image (left-right); upside down as well with `vertical_probability` (for parts with no top)."""
    mirrored = ImageOps.mirror(image)
    return ImageOps.flip(mirrored) if rng.random() < vertical_probability else mirrored


def sharpness(image: Image.Image, rng: np.random.Generator, *, low: float = 0.0, high: float = 3.0) -> Image.Image:
    """Blurred (factor below 1) to over-sharpened (above 1), as out-of-focus and processed cameras give."""
    factor = rng.uniform(low, high)
    if abs(factor - 1) < 0.3:
        factor = low if factor < 1 else high
    return ImageEnhance.Sharpness(image).enhance(factor)


def brightness(image: Image.Image, rng: np.random.Generator, *, low: float = 0.55, high: float = 1.45) -> Image.Image:
    """Darker or brighter light: every pixel scaled by a factor in [low, high], at least 10% away from 1."""
    factor = rng.uniform(low, high)
    if abs(factor - 1) < 0.1:
        factor = 0.9 if factor < 1 else 1.1
    return ImageEnhance.Brightness(image).enhance(factor)


def rotate(image: Image.Image, rng: np.random.Generator, *, max_degrees: float = 30.0) -> Image.Image:
    """Turned by up to `max_degrees` either way (at least 3), corners filled with the border colour."""
    angle = rng.uniform(3, max_degrees) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=border_colour(image))


def colour(
    image: Image.Image, rng: np.random.Generator, *, saturation: tuple[float, float] = (0.5, 1.5), max_hue: float = 0.05
) -> Image.Image:
    """Another white balance and saturation: hue turned by up to `max_hue` of the circle, saturation scaled."""
    hsv = np.asarray(image.convert("HSV")).astype(np.int16)
    shift = round(rng.uniform(-max_hue, max_hue) * 255) or 3
    hsv[..., 0] = (hsv[..., 0] + shift) % 256
    turned = Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")
    return ImageEnhance.Color(turned).enhance(rng.uniform(*saturation))


def _perspective_coefficients(source: np.ndarray, target: np.ndarray) -> list[float]:
    """The 8 coefficients PIL wants to map output points `target` back to input points `source`."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.asarray(rows, dtype=np.float64), source.reshape(-1).astype(np.float64))
    return [float(c) for c in solution]


def perspective(image: Image.Image, rng: np.random.Generator, *, max_distortion: float = 0.15) -> Image.Image:
    """Seen from another angle: each corner moved inwards by up to `max_distortion` of the size."""
    width, height = image.size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    moved = corners + inward * rng.uniform(0.02, max_distortion, size=(4, 2)) * [width, height]
    coefficients = _perspective_coefficients(corners, moved)
    return image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        coefficients,
        resample=Image.Resampling.BILINEAR,
        fillcolor=border_colour(image),
    )


def product_mask(image: Image.Image, *, threshold: int = 40) -> Image.Image:
    """An L mask, 255 on the product: pixels whose colour differs from the border's, closed and smoothed."""
    difference = ImageChops.difference(image.convert("RGB"), Image.new("RGB", image.size, border_colour(image)))
    distance = np.asarray(difference).astype(np.int32).sum(axis=2)
    mask = Image.fromarray(np.where(distance > threshold, 255, 0).astype(np.uint8), mode="L")
    size = max(3, (min(image.size) // 40) | 1)  # odd, about 2.5% of the image
    mask = mask.filter(ImageFilter.MaxFilter(size)).filter(ImageFilter.MinFilter(size))  # close small holes
    return mask.filter(ImageFilter.GaussianBlur(1))


def _built_in_backgrounds(size: int = 256) -> list[Image.Image]:
    rng = np.random.default_rng(20240611)
    out = []
    try:
        out += [Image.fromarray(photo) for photo in load_sample_images().images]
    except OSError:  # scikit-learn installed without its sample photos: the generated ones remain
        logger.debug("scikit-learn's sample photos are missing; generated backgrounds only")
    ramp = np.linspace(0, 1, size)[None, :, None]
    for low, high in (
        ((40, 40, 45), (200, 200, 190)),
        ((90, 60, 30), (230, 210, 170)),
        ((20, 60, 90), (160, 200, 220)),
    ):
        gradient = np.asarray(low) + (np.asarray(high) - np.asarray(low)) * ramp
        out.append(Image.fromarray(np.broadcast_to(gradient, (size, size, 3)).astype(np.uint8)))
    stripes = (np.indices((size, size)).sum(axis=0) // 16 % 2)[..., None] * np.array([70, 70, 70]) + 90
    out.append(Image.fromarray(stripes.astype(np.uint8)))
    for base in ((120, 120, 120), (60, 90, 60)):
        noise = rng.normal(0, 35, (size, size, 3)) + np.asarray(base)
        out.append(Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)))
    return out


def backgrounds_from_folder(folder: Path) -> list[Image.Image]:
    """Every JPEG/PNG/WebP photo in `folder` (not recursive), loaded as RGB; DatasetError if none or unreadable."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in BACKGROUND_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise DatasetError(f"{folder}: no background photos (.jpg, .jpeg, .png, .webp) found")
    images = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                images.append(opened.convert("RGB"))
        except OSError as exc:
            raise DatasetError(f"{path}: unreadable background photo: {exc}") from exc
    return images


@dataclass
class BackgroundReplacer:
    """Cut the product out and put it on a random crop of one of `backgrounds` (built-in ones by default)."""

    backgrounds: Sequence[Image.Image] = field(default_factory=_built_in_backgrounds)
    threshold: int = 40
    _identity: str = field(default="", init=False, repr=False)

    @property
    def identity(self) -> str:
        """A digest of the backgrounds and threshold: synthetic copies made with others are other images."""
        if not self._identity:
            digest = hashlib.sha256(str(self.threshold).encode())
            for background in self.backgrounds:
                digest.update(f"{background.size}".encode())
                digest.update(background.convert("RGB").tobytes())
            self._identity = digest.hexdigest()[:16]
        return self._identity

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        background = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        width, height = image.size
        scale = max(width / background.width, height / background.height) * rng.uniform(1.0, 1.6)
        resized = background.resize(
            (max(width, round(background.width * scale)), max(height, round(background.height * scale)))
        )
        left = int(rng.integers(0, resized.width - width + 1))
        top = int(rng.integers(0, resized.height - height + 1))
        canvas = resized.crop((left, top, left + width, top + height)).convert("RGB")
        canvas.paste(image.convert("RGB"), (0, 0), product_mask(image, threshold=self.threshold))
        return canvas


TransformFunction = Callable[[Image.Image, np.random.Generator], Image.Image]

TRANSFORMS: dict[str, TransformFunction] = {
    "translate": translate,
    "reflect": reflect,
    "sharpness": sharpness,
    "brightness": brightness,
    "rotate": rotate,
    "colour": colour,
    "perspective": perspective,
}
ALL_TRANSFORMS = (*TRANSFORMS, "background")


def parse_transforms(text: str) -> tuple[str, ...]:
    """'all', 'none' or comma-separated names from ALL_TRANSFORMS; DatasetError names an unknown one."""
    text = text.strip().lower()
    if text == "all":
        return ALL_TRANSFORMS
    if text in ("", "none"):
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_TRANSFORMS]
    if unknown:
        raise DatasetError(f"unknown transform(s) {', '.join(unknown)}; known: {', '.join(ALL_TRANSFORMS)}")
    return names


@dataclass
class Augmenter:
    """`copies` synthetic images per photo, each applying every named transform with `probability`."""

    names: Sequence[str] = ALL_TRANSFORMS
    copies: int = 4
    probability: float = 0.5
    seed: int = 0
    background: BackgroundReplacer | None = None

    def __post_init__(self) -> None:
        unknown = [name for name in self.names if name not in ALL_TRANSFORMS]
        if unknown:
            raise DatasetError(f"unknown transform(s) {', '.join(unknown)}; known: {', '.join(ALL_TRANSFORMS)}")
        if self.copies < 0 or not 0 < self.probability <= 1:
            raise DatasetError("copies must be 0 or more and probability in (0, 1]")
        if "background" in self.names and self.background is None:
            self.background = BackgroundReplacer()

    def _function(self, name: str) -> TransformFunction:
        if name == "background":
            assert self.background is not None
            return self.background
        return TRANSFORMS[name]

    def recipe(self, copy_index: int) -> str:
        """What makes a photo's copy `copy_index` what it is (with the photo's own seed): a cache key part."""
        background = self.background.identity if self.background is not None else "-"
        return f"synthetic:{','.join(self.names)}:{self.probability}:{self.seed}:{background}:{copy_index}"

    def variants(self, image: Image.Image, photo_index: int) -> list[Image.Image]:
        """The synthetic copies of one photo; the same (seed, photo_index) always gives the same images.

        Training passes a number derived from the photo's bytes as `photo_index`, so a photo's copies do
        not change when other photos are added to the folder."""
        if not self.names:
            return []
        out = []
        for copy_index in range(self.copies):
            rng = np.random.default_rng([self.seed, photo_index, copy_index])
            chosen = [name for name in self.names if rng.random() < self.probability]
            if not chosen:
                chosen = [self.names[int(rng.integers(len(self.names)))]]
            if "background" in chosen:  # cut out from the original photo, whose border is the real background
                chosen = ["background", *[name for name in chosen if name != "background"]]
            result = image.convert("RGB")
            for name in chosen:
                result = self._function(name)(result, rng)
            out.append(result)
        return out
