from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.catalog import load_catalog
from models.errors import DatasetError
from models.training import calibrate_threshold, fit_head, scan_images


def test_threshold_is_the_lowest_that_meets_the_target_precision() -> None:
    confidence = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    assert calibrate_threshold(confidence, correct, 0.75) == 0.6  # 4 of 5 right above 0.6
    assert calibrate_threshold(confidence, correct, 1.0) == 0.8
    assert calibrate_threshold(np.array([0.9, 0.4]), np.array([False, True]), 0.9) == 0.9  # unreachable: refuse


def test_category_level_is_sure_where_products_inside_it_are_not() -> None:
    rng = np.random.default_rng(0)
    centres = {"tops": np.array([1.0, 0, 0]), "bags": np.array([0, 1.0, 0])}
    categories_of = {"shirt": "tops", "tshirt": "tops", "tote": "bags", "clutch": "bags"}
    products = [p for p in categories_of for _ in range(30)]
    features = np.stack([centres[categories_of[p]] + rng.normal(0, 0.05, 3) for p in products])
    head, report = fit_head(features, products, categories_of, target_precision=0.9)
    assert report["cv_category_accuracy"] > 0.95 > report["cv_accuracy"]
    decision = head.decide(head.probabilities(centres["tops"][None, :])[0])
    assert decision.status == "unknown" and decision.category == "tops" and decision.product is None


def test_scan_reports_every_mismatch_with_the_catalog(tmp_path: Path) -> None:
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(
        json.dumps(
            [
                {"product": "valve", "name": "Valve", "category": "fittings"},
                {"product": "pump", "name": "Pump", "category": "pumps"},
                {"product": "empty", "name": "Empty", "category": "fittings"},
            ]
        )
    )
    catalog = load_catalog(catalog_file)
    images = tmp_path / "images"
    for category, product in [
        ("fittings", "valve"),
        ("fittings", "pump"),
        ("fittings", "ghost"),
        ("fittings", "empty"),
    ]:
        (images / category / product).mkdir(parents=True)
        if product != "empty":
            Image.new("RGB", (8, 8)).save(images / category / product / "a.png")
    with pytest.raises(DatasetError) as caught:
        scan_images(images, catalog)
    text = str(caught.value)
    assert "'ghost' is not in the catalog" in text and "puts 'pump' in category 'pumps'" in text
    assert "'empty' has no" in text
