from __future__ import annotations

from pathlib import Path

import numpy as np

from models.train import datasets


def test_the_shipped_sample_stands_in_when_debians_dataset_is_absent(tmp_path: Path) -> None:
    train = datasets.load_split("train", root=tmp_path)
    test = datasets.load_split("test", root=tmp_path)
    assert train.images.shape == (400, 28, 28) and test.images.shape == (200, 28, 28)
    assert sorted(np.unique(train.labels)) == list(range(10))
    assert np.bincount(test.labels).tolist() == [20] * 10


def test_catalog_puts_every_product_in_one_of_five_categories() -> None:
    catalog = datasets.catalog()
    assert len(catalog) == 10
    assert {record["category"] for record in catalog.values()} == {"tops", "bottoms", "dresses", "footwear", "bags"}
