"""Fashion-MNIST as a product line: Zalando's ten product kinds in five categories, for demos, tests and benchmarks.

Debian's `dataset-fashion-mnist` package provides the full set; a small sample ships with partsight so the
demo also works where that package cannot be installed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.errors import DatasetError
from models.store.catalog import Catalog

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_FILE = Path(__file__).with_name("data") / "fashion_mnist_sample.npz"

# (product id, name, category) in label order 0..9
PRODUCTS: tuple[tuple[str, str, str], ...] = (
    ("tshirt-top", "T-shirt/top", "tops"),
    ("trouser", "Trouser", "bottoms"),
    ("pullover", "Pullover", "tops"),
    ("dress", "Dress", "dresses"),
    ("coat", "Coat", "tops"),
    ("sandal", "Sandal", "footwear"),
    ("shirt", "Shirt", "tops"),
    ("sneaker", "Sneaker", "footwear"),
    ("bag", "Bag", "bags"),
    ("ankle-boot", "Ankle boot", "footwear"),
)


def catalog() -> Catalog:
    return {
        product: {
            "product": product,
            "name": name,
            "category": category,
            "sku": f"FM-{label:04d}",
            "source": "Fashion-MNIST (Zalando, MIT)",
        }
        for label, (product, name, category) in enumerate(PRODUCTS)
    }


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    dims = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def debian_available(root: Path = DEBIAN_DIR) -> bool:
    return (root / "train-images-idx3-ubyte.gz").is_file()


def load_split(split: str, *, root: Path = DEBIAN_DIR) -> Split:
    """The official `train` or `test` split from Debian's package, else the shipped sample."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be train or test, got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    if debian_available(root):
        return Split(
            _read_idx(root / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        )
    if not SAMPLE_FILE.is_file():
        raise DatasetError(f"neither {root} (apt-get install dataset-fashion-mnist) nor {SAMPLE_FILE} is present")
    with np.load(SAMPLE_FILE, allow_pickle=False) as arrays:
        return Split(arrays[f"{split}_images"], arrays[f"{split}_labels"])


def pick_per_class(split: Split, per_class: int, *, seed: int = 0, labels: tuple[int, ...] | None = None) -> list[int]:
    """Indices of `per_class` seeded random examples of each label."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in labels if labels is not None else range(len(PRODUCTS)):
        candidates = np.flatnonzero(split.labels == label)
        take = min(per_class, len(candidates))
        chosen.extend(int(i) for i in rng.choice(candidates, size=take, replace=False))
    return chosen


def to_photo(image: np.ndarray, size: int = 112) -> Image.Image:
    """A 28x28 grey product image as an RGB photo-sized picture (dark product on a light background)."""
    inverted = 255 - image
    return Image.fromarray(inverted, mode="L").resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def export_training_folder(out: Path, *, per_class: int, seed: int = 0) -> list[Path]:
    """Write `out/<category>/<product>/*.png` from the train split; returns the written paths."""
    split = load_split("train")
    written = []
    for index in pick_per_class(split, per_class, seed=seed):
        product, _, category = PRODUCTS[int(split.labels[index])]
        target = out / category / product / f"train-{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        to_photo(split.images[index]).save(target)
        written.append(target)
    return written


def export_camera_folder(out: Path, *, per_class: int, seed: int = 1, quality: int = 90) -> list[tuple[Path, str]]:
    """Write held-out test images as JPEGs `out/<index>-<product>.jpg`; returns (path, true product)."""
    split = load_split("test")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in sorted(pick_per_class(split, per_class, seed=seed)):
        product = PRODUCTS[int(split.labels[index])][0]
        target = out / f"test-{index:05d}-{product}.jpg"
        to_photo(split.images[index]).save(target, quality=quality)
        written.append((target, product))
    return written
