from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from models.answer.head import RECOGNIZED, UNKNOWN, ProductHead, logistic_classifier
from models.bundle import load_model, resolve, write_model
from models.errors import ArtifactError, CatalogError
from models.store.catalog import load_catalog
from models.store.versions import file_sha256


def head_of(coef: list[list[float]], categories: tuple[str, ...], **thresholds: float) -> ProductHead:
    products = tuple(f"p{i}" for i in range(len(coef)))
    classifier = logistic_classifier(products, np.array(coef, np.float32), np.zeros(len(coef), np.float32))
    return ProductHead(products, categories, {None: classifier}, **thresholds)


def test_decisions_recognized_category_only_and_unknown() -> None:
    head = head_of([[1, 0], [0, 1], [0, 0]], ("tops", "tops", "bags"), product_threshold=0.6, category_threshold=0.6)
    sure = head.decide([0.8, 0.1, 0.1])
    assert (sure.status, sure.product, sure.category) == (RECOGNIZED, "p0", "tops")
    torn = head.decide([0.45, 0.45, 0.10])  # the category is sure, no single product is
    assert (torn.status, torn.product, torn.category) == (UNKNOWN, None, "tops")
    assert torn.category_confidence == pytest.approx(0.9)
    lost = head.decide([0.30, 0.25, 0.45])  # tops 0.55, bags 0.45: neither reaches 0.6
    assert (lost.status, lost.product, lost.category) == (UNKNOWN, None, None)
    assert [entry["product"] for entry in lost.top_k] == ["p2", "p0", "p1"]


def test_first_format_directories_still_load(tmp_path: Path) -> None:
    """A model directory written before heads had several kinds: one logistic regression as coef/intercept."""
    version = write_demo(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    np.savez(version / "head.npz", coef=np.array([[1, 0], [0, 1]], np.float32), intercept=np.zeros(2, np.float32))
    manifest["format"] = 1
    manifest["head"] = {"kind": "logistic_regression", "product_threshold": 0.5, "category_threshold": 0.5}
    manifest["files"]["head.npz"]["sha256"] = file_sha256(version / "head.npz")
    (version / "manifest.json").write_text(json.dumps(manifest))
    head = load_model(version).head
    np.testing.assert_allclose(head.probabilities(np.array([[3.0, 0.0]]))[0], [0.952574, 0.047426], atol=1e-5)


def write_demo(store: Path) -> Path:
    head = head_of([[1, 0], [0, 1]], ("c1", "c2"))
    catalog = {
        "p0": {"product": "p0", "name": "Zero", "category": "c1", "price": 3},
        "p1": {"product": "p1", "name": "One", "category": "c2"},
    }
    return write_model(store, name="demo", head=head, catalog=catalog, backbone={"name": "efficientnet_lite0"})


def test_model_directory_round_trip_through_current(tmp_path: Path) -> None:
    version = write_demo(tmp_path)
    assert resolve(tmp_path) == version and (version.stat().st_mode & 0o777) == 0o755
    bundle = load_model(tmp_path)
    assert bundle.name == "demo" and bundle.head.products == ("p0", "p1")
    assert bundle.catalog["p0"]["price"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]
    second = write_demo(tmp_path)
    assert resolve(tmp_path) == second != version


@pytest.mark.parametrize("part", ["head.npz", "labels", "catalog"])
def test_a_tampered_file_is_refused(tmp_path: Path, part: str) -> None:
    version = write_demo(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    victim = part if part.endswith(".npz") else manifest[part]["shards"][0]  # the labels' and catalog's shard
    assert (version / victim).is_file()
    with (version / victim).open("ab") as handle:
        handle.write(b" ")
    with pytest.raises(ArtifactError, match=re.escape(f"{victim} has sha256")):
        load_model(version)


def test_missing_files_and_manifest_entries_are_refused(tmp_path: Path) -> None:
    version = write_demo(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    (shard,) = manifest["labels"]["shards"]
    del manifest["files"][shard]
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"does not list {re.escape(shard)}"):
        load_model(version)
    with pytest.raises(ArtifactError, match="neither a model version"):
        load_model(tmp_path / "nowhere")


def test_a_pickle_disguised_as_head_is_never_unpickled(tmp_path: Path) -> None:
    import pickle

    version = write_demo(tmp_path)
    np.save(version / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
    (version / "head.npz").write_bytes(pickle.dumps({"coef": 1}))
    manifest = json.loads((version / "manifest.json").read_text())

    manifest["files"]["head.npz"]["sha256"] = file_sha256(version / "head.npz")  # even with a matching hash
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="malformed model files"):
        load_model(version)


def test_catalogs_in_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("product,name,category,sku\nv-1,Valve,valves,S1\nv-2,Pump,pumps,S2\n")
    assert load_catalog(csv_file)["v-2"] == {"product": "v-2", "name": "Pump", "category": "pumps", "sku": "S2"}
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"products": [{"product": "a", "name": "A", "category": "x", "w": 2}]}))
    assert load_catalog(json_file)["a"]["w"] == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.csv", "product,name\na,A\n", "lacks column"),
        ("c.json", '[{"product": "a", "name": "A"}]', "category"),
        (
            "c.json",
            '[{"product": "a", "name": "A", "category": "x"}, {"product": "a", "name": "B", "category": "x"}]',
            "appears twice",
        ),
        ("c.json", "{oops", "not valid"),
        ("c.json", "[]", "no products"),
        ("c.yaml", "", "must be .csv or .json"),
    ],
)
def test_catalog_errors_name_the_problem(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)
