"""A tiny drawn catalog for training tests: each product a coloured disc on a pale background, four photos each."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def drawn_catalog(root: Path, products: Sequence[tuple[str, str, tuple[int, int, int]]]) -> tuple[Path, Path]:
    """`products` as (category, product, colour): `<root>/images/<category>/<product>/{0..3}.jpg` and the catalog."""
    catalog = root / "catalog.json"
    catalog.write_text(json.dumps([{"product": p, "name": p, "category": c} for c, p, _ in products]))
    rng = np.random.default_rng(0)
    for category, product, colour in products:
        folder = root / "images" / category / product
        folder.mkdir(parents=True)
        for index in range(4):
            photo = Image.new("RGB", (96, 96), (225, 225, 220))
            x, y = (int(v) for v in rng.integers(10, 40, 2))
            ImageDraw.Draw(photo).ellipse((x, y, x + 45, y + 45), fill=colour)
            photo.save(folder / f"{index}.jpg")
    return root / "images", catalog
