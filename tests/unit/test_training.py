from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import DatasetError
from models.store.catalog import load_catalog
from models.train.head_fitting import fit_model
from models.train.node_fitting import calibrate_threshold
from models.train.trainer import scan_images
from tests.unit.drawn import drawn_catalog


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
    fitted = fit_model(features, products, categories_of, target_precision=0.9)
    head, report = fitted.head, fitted.report
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


def test_synthetic_copies_never_score_the_photo_they_came_from() -> None:
    """Features with no class signal, each photo copied 3 times: leaking copies across folds would look perfect."""
    rng = np.random.default_rng(1)
    categories_of = {f"p{i}": "all" for i in range(4)}
    photos = [p for p in categories_of for _ in range(10)]
    features, products, groups, synthetic = [], [], [], []
    for index, product in enumerate(photos):
        vector = rng.normal(size=64)
        for copy in range(4):
            features.append(vector + rng.normal(0, 0.01, 64))
            products.append(product)
            groups.append(index)
            synthetic.append(copy > 0)
    features_array = np.stack(features)
    grouped = fit_model(
        features_array, products, categories_of, groups=np.array(groups), synthetic=np.array(synthetic)
    ).report
    leaking = fit_model(features_array, products, categories_of, synthetic=np.array(synthetic)).report  # no groups
    assert grouped["images"] == 40 and grouped["synthetic_images"] == 120
    assert grouped["cv_accuracy"] < 0.5  # chance is 0.25: nothing to learn
    assert leaking["cv_accuracy"] > 0.9  # what a fold that saw the photo's copies would report


def test_training_with_synthetic_copies_records_them_and_serves(tmp_path: Path) -> None:
    from PIL import ImageDraw

    from models.recognizer import Recognizer
    from models.train.trainer import TrainOptions, train

    drawn_catalog(tmp_path, [("fittings", "red-valve", (200, 30, 30)), ("pumps", "blue-pump", (30, 40, 200))])
    options = TrainOptions(
        images=tmp_path / "images",
        catalog=tmp_path / "catalog.json",
        out=tmp_path / "store",
        show_progress=False,
        synthetic_per_image=2,
        transforms=("rotate", "background", "brightness"),
        export_onnx=False,
    )
    version = train(options)
    report = json.loads((version / "manifest.json").read_text())["training"]
    assert report["images"] == 8 and report["synthetic_images"] == 16
    assert report["feature_cache"] == {"read": 0, "computed": 24}
    page = (version / "report.md").read_text()
    assert "| red-valve |" in page and "| blue-pump |" in page and "![confusion matrix](confusion_matrix.png)" in page
    full = json.loads((version / "report.json").read_text())
    assert sum(row["support"] for row in full["cv_evaluation"]["per_product"]) == 8  # real photos only
    assert full["classifier_search"]["why"] == "every kind"  # two products: the whole search
    for plot in ("confusion_matrix.png", "precision_coverage.png"):
        with Image.open(version / plot) as png:
            assert png.format == "PNG" and png.size[0] > 300
    manifest = json.loads((version / "manifest.json").read_text())
    assert {"report.json", "report.md", "confusion_matrix.png"} <= set(manifest["files"])  # sha256-verified
    again = train(options)  # the same photos and settings, a second time
    second = json.loads((again / "manifest.json").read_text())["training"]
    assert second["feature_cache"] == {"read": 24, "computed": 0}  # nothing recomputed
    assert second["classifiers"] == report["classifiers"]
    assert report["synthetic"] == {"per_image": 2, "transforms": ["rotate", "background", "brightness"], "seed": 0}
    recognizer = Recognizer.load(version, device="cpu")
    probe = Image.new("RGB", (96, 96), (225, 225, 220))
    ImageDraw.Draw(probe).ellipse((25, 25, 70, 70), fill=(200, 30, 30))
    image = np.asarray(probe.resize((224, 224)))[None]
    assert recognizer.classify(recognizer.features(image))[0].top_k[0]["product"] == "red-valve"


def test_the_tuning_sample_keeps_whole_products_of_whole_categories_and_copies_with_their_photo() -> None:
    from models.train.node_fitting import TUNING_PHOTOS_PER_PRODUCT, tuning_sample

    assert TUNING_PHOTOS_PER_PRODUCT == 10
    products = np.repeat([f"p{i}" for i in range(12)], 20)  # 12 products x 20 photos, each with one copy after it
    labels = np.repeat(products, 2)
    categories = np.array([f"c{int(label[1:]) // 3}" for label in labels])  # 4 families of 3 products
    groups = np.repeat(np.arange(240), 2)
    synthetic = np.tile([False, True], 240)
    assert tuning_sample(labels, groups, synthetic, None, 0).all()
    assert tuning_sample(labels, groups, synthetic, 240, 0, categories).all()

    kept = tuning_sample(labels, groups, synthetic, 70, 0, categories)  # 10 a product: 30 a family, 2 fit in 70
    photos = kept & ~synthetic
    assert photos.sum() == 60 and kept.sum() == 120  # 60 photos and their 60 copies
    assert len(set(categories[kept])) == 2 and len(set(labels[kept])) == 6
    assert all((labels[photos] == name).sum() == 10 for name in set(labels[kept]))  # whole families, 10 photos each
    assert all(kept[groups == g].all() or not kept[groups == g].any() for g in range(240))
    assert (tuning_sample(labels, groups, synthetic, 70, 1, categories) != kept).any()  # the seed draws others

    by_products = tuning_sample(labels, groups, synthetic, 70, 0)  # without categories: 7 whole products
    assert (by_products & ~synthetic).sum() == 70 and len(set(labels[by_products])) == 7
    two_families = np.where(categories < "c2", "left", "right")  # 60 photos a family: one fits, so by product
    mixed = tuning_sample(labels, groups, synthetic, 70, 0, two_families)
    assert len(set(labels[mixed])) == 7 and len(set(two_families[mixed])) == 2

    few = np.array(["rare", "rare", *products])  # a product of two photos would cut every node's folds to two
    few_groups, few_synthetic = np.arange(len(few)), np.zeros(len(few), dtype=bool)
    few_categories = np.array(["c0", "c0", *categories[::2]])
    for seed in range(5):
        assert "rare" not in few[tuning_sample(few, few_groups, few_synthetic, 70, seed, few_categories)]
    tiny = tuning_sample(labels, groups, synthetic, 3, 0, categories)  # at least two products' photos
    assert len(set(labels[tiny])) >= 2 and (tiny & ~synthetic).sum() <= 20

    many = np.repeat([f"q{i}" for i in range(1000)], 5)  # more products than the budget has photos: it drew none
    families = np.array([f"f{int(name[1:]) // 12}" for name in many])
    sample = tuning_sample(many, np.arange(5000), np.zeros(5000, dtype=bool), 300, 0, families)
    assert sample.sum() == 300 and len(set(many[sample])) == 60 and len(set(families[sample])) == 5


def test_categories_left_out_of_the_tuning_sample_get_the_usual_choice_and_a_head_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models.answer.classifiers import Candidate
    from models.train import head_fitting

    rng = np.random.default_rng(0)
    names = [f"f{family}-v{variant}" for family in range(8) for variant in range(3)]  # 8 families of 3 look-alikes
    centres = {name: np.r_[np.eye(8)[int(name[1])] * 6, rng.normal(0, 1, 4)] for name in names}
    products = [name for name in names for _ in range(12)]
    features = np.stack([centres[p] + rng.normal(0, 0.3, 12) for p in products]).astype(np.float32)
    categories_of = {name: name.split("-")[0] for name in names}
    search = [Candidate("logistic", 1.0), Candidate("logistic", 10.0)]
    fitted = head_fitting.fit_model(
        features, products, categories_of, search=search, tuning_photos=100, structure="category-first"
    )
    report = fitted.report
    assert report["tuned_on_images"] == 90 and report["tuned_on_categories"] == 3  # 3 families of 30 photos
    assert report["structure"] == "category-first" and set(fitted.head.classifiers) == {None, *categories_of.values()}
    assert report["untuned_nodes"]["nodes"] == 5
    tuned = [entry["chosen"] for name, entry in report["classifiers"].items() if name != "(categories)"]
    assert report["untuned_nodes"]["chosen"] == max(tuned, key=tuned.count)
    probe = np.stack([centres[name] for name in names])
    answered = np.asarray(fitted.head.products)[fitted.head.probabilities(probe).argmax(axis=1)]
    assert list(answered) == names  # families never tuned answer their own products

    monkeypatch.setattr(head_fitting, "FLAT_UP_TO_PRODUCTS", 20)  # past it, flat is not tried
    large = head_fitting.fit_model(features, products, categories_of, search=search[:1], tuning_photos=100)
    assert large.report["structure"] == "category-first" and "structure_cv_macro_f1" not in large.report
    assert "category-first without trying flat" in large.report["structure_why"]


def test_photo_folds_hold_out_each_photo_once_and_never_train_on_its_copies() -> None:
    from models.train.node_fitting import fold_count, photo_folds

    labels = np.repeat(["a", "b", "c"], [10, 10, 5])  # photo products; each photo has 2 copies after it
    groups = np.repeat(np.arange(25), 3)
    synthetic = np.tile([False, True, True], 25)
    real = np.flatnonzero(~synthetic)
    assert fold_count(labels) == 5 and fold_count(np.array(["a", "a", "b"])) == 1
    splits = photo_folds(real, labels, groups, 5, seed=0)
    assert len(splits) == 5
    held_out_everywhere = np.concatenate([held_out for _, held_out in splits])
    assert sorted(held_out_everywhere.tolist()) == list(range(25))  # every photo scored exactly once
    for train_rows, held_out in splits:
        scored_photos = set(groups[real[held_out]].tolist())
        assert scored_photos.isdisjoint(groups[train_rows].tolist())  # neither the photo nor its copies
        assert len(train_rows) == 3 * (25 - len(held_out))  # every other photo with both its copies
        assert {str(label): int((labels[held_out] == label).sum()) for label in "abc"} == {"a": 2, "b": 2, "c": 1}


def test_the_default_search_narrows_to_logistic_regression_on_a_large_catalog() -> None:
    from models.answer.classifiers import KINDS, PREPROCESSING
    from models.train.head_fitting import SEARCH_EVERY_KIND_UP_TO, search_for

    assert search_for(SEARCH_EVERY_KIND_UP_TO, None, None)[:2] == (KINDS, PREPROCESSING)
    kinds, steps, why = search_for(SEARCH_EVERY_KIND_UP_TO + 1, None, None)
    assert (kinds, steps) == (("logistic",), ("none",)) and "logistic regression alone" in why
    assert search_for(500, ("rbf_svm",), None)[:2] == (("rbf_svm",), ("none",))  # named: as named


def test_node_starts_are_a_heads_classifiers_only_for_its_own_structure() -> None:
    from types import SimpleNamespace

    from models.train.node_fitting import node_starts

    head = SimpleNamespace(structure="category-first", classifiers={None: "families", "gears": "gears"})
    assert node_starts(head, "category-first") == head.classifiers  # type: ignore[arg-type]
    assert node_starts(head, "flat") is None  # type: ignore[arg-type]
    assert node_starts(None, "flat") is None


def test_the_choices_and_the_calibration_do_not_depend_on_the_order_of_the_rows() -> None:
    """A consolidation reads a version's stored rows (trained products first, then each enrolment's) where a training
    of the same photos reads them folder by folder: given each row's photo key, both make the same folds."""
    from models.answer.classifiers import Candidate

    rng = np.random.default_rng(3)
    names = [f"f{family}-v{variant}" for family in range(4) for variant in range(3)]  # look-alikes: folds matter
    centres = {name: np.r_[np.eye(4)[int(name[1])] * 2, rng.normal(0, 0.6, 6)] for name in names}
    products = np.array([name for name in names for _ in range(10)])
    features = np.stack([centres[p] + rng.normal(0, 0.5, 10) for p in products]).astype(np.float32)
    keys = np.array([f"{rng.integers(1 << 62):016x}" for _ in products])
    categories_of = {name: name.split("-")[0] for name in names}
    search = [Candidate("logistic", 1.0), Candidate("logistic", 100.0)]
    shuffled = rng.permutation(len(products))

    def fitted(rows: np.ndarray, tuning_photos: int | None) -> tuple[dict, float, np.ndarray]:
        result = fit_model(
            features[rows],
            list(products[rows]),
            categories_of,
            search=search,
            refuse_unseen=0.8,
            photo_keys=keys[rows],
            tuning_photos=tuning_photos,
        )
        assert result.novelty is not None
        names = ("structure", "structure_cv_macro_f1", "classifiers", "open_set", "tuned_on_products")
        report = {key: result.report.get(key) for key in names}
        return report, result.novelty.threshold, result.head.probabilities(features)

    for tuning_photos in (None, 90):  # every row, and a sample of 9 products drawn over the rows
        given, threshold, probabilities = fitted(np.arange(len(products)), tuning_photos)
        again, threshold_again, probabilities_again = fitted(shuffled, tuning_photos)
        assert given == again and threshold == threshold_again
        np.testing.assert_allclose(probabilities, probabilities_again, atol=1e-4)
    assert given["tuned_on_products"] == 9


def test_the_canonical_order_is_by_product_then_photo_key_with_copies_after_their_photo() -> None:
    from models.train.node_fitting import canonical_order

    labels = np.array(["b", "a", "b", "a", "a"])
    keys = np.array(["k2", "k9", "k1", "k3", "k3"])  # rows 3 and 4: a photo and its copy
    assert canonical_order(labels, keys).tolist() == [3, 4, 1, 2, 0]
    assert canonical_order(labels).tolist() == [1, 3, 4, 0, 2]  # without keys: by product, in the order given
