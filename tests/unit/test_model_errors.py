"""Errors that say what happened: a malformed file is an ArtifactError naming it, a bug propagates as itself
(never disguised as "malformed model files" or `refit_failed`), and the enrolment request store translates what
the file system and its documents raise into EnrolmentError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import models.bundle
import models.train.enrolment
from models.answer.arrays import read_arrays
from models.bundle import load_model
from models.errors import ArtifactError, EnrolmentError, InvalidModel, TrainingError, UnknownEnrolment
from models.store.enrolment_requests import CORRUPT_REQUEST, STORE_UNAVAILABLE, EnrolmentStore
from models.store.versions import file_sha256
from models.train.enrolment import refit_for_enrolment
from models.train.enrolment_base import Choices, EnrolmentBase
from tests.unit.test_head_and_artifact import write_demo


def rewrite(version: Path, name: str, data: bytes) -> None:
    """Replace a file of a version and give the manifest its new sha256, so only its content is wrong."""
    (version / name).write_bytes(data)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["files"][name]["sha256"] = file_sha256(version / name)
    (version / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("part", "data"),
    [
        ("head.npz", b"PK\x03\x04 not a zip"),
        ("head.npz", b""),
        ("labels", b"{not json"),
        ("labels", b'{"products": ["p0"], "categories": []}'),
        ("catalog", b"\xff"),
        ("catalog", b'{"records": [1, 2]}'),
    ],
)
def test_a_malformed_file_is_an_artifact_error_naming_it(tmp_path: Path, part: str, data: bytes) -> None:
    version = write_demo(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    name = part if part.endswith(".npz") else manifest[part]["shards"][0]  # the labels' or the catalog's shard
    rewrite(version, name, data)
    with pytest.raises(ArtifactError, match="malformed model files") as caught:
        load_model(version)
    assert str(version / name) in str(caught.value)


def test_a_catalog_record_under_another_product_is_refused(tmp_path: Path) -> None:
    version = write_demo(tmp_path)
    (shard,) = json.loads((version / "manifest.json").read_text())["catalog"]["shards"]
    rewrite(version, shard, b'{"records": {"p0": {"product": "p1", "category": "c"}}}')
    with pytest.raises(ArtifactError, match=r"malformed model files: the catalog's record of 'p0' names 'p1'"):
        load_model(version)


def test_a_head_file_without_its_arrays_names_what_it_lacks(tmp_path: Path) -> None:
    version = write_demo(tmp_path)
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(2))
    rewrite(version, "head.npz", path.read_bytes())
    with pytest.raises(ArtifactError, match=r"malformed model files.*coef"):
        load_model(version)
    with pytest.raises(ArtifactError, match=r"other\.npz has no array 'features'"):
        read_arrays(path, ("features",))


def test_a_malformed_manifest_record_is_malformed_model_files(tmp_path: Path) -> None:
    version = write_demo(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    del manifest["head"]["product_threshold"]
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"malformed model files.*product_threshold"):
        load_model(version)


def test_a_bug_while_loading_propagates_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = write_demo(tmp_path)
    assert load_model(version).head.products == ("p0", "p1")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the head")

    monkeypatch.setattr(models.bundle, "restored_classifiers", broken)
    with pytest.raises(RuntimeError, match="a bug in the head"):
        load_model(version)

    def numpy_bug(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a numpy bug, not a malformed file")

    monkeypatch.setattr(models.bundle, "restored_classifiers", numpy_bug)
    with pytest.raises(ValueError, match="a numpy bug") as caught:
        load_model(version)
    assert not isinstance(caught.value, ArtifactError)


def rows() -> tuple[EnrolmentBase, Choices, SimpleNamespace]:
    rng = np.random.default_rng(0)
    count = 12
    base = EnrolmentBase(
        features=rng.normal(size=(count, 4)).astype(np.float32),
        products=np.repeat(["a", "b", "c"], 4),
        groups=np.arange(count),
        synthetic=np.zeros(count, dtype=bool),
        photos=np.array([f"p{i}" for i in range(count)]),
        sha256=np.array([f"{i:064x}" for i in range(count)]),
    )
    head = SimpleNamespace(category_threshold=0.5, structure="flat", classifiers={})  # no node to start from
    bundle = SimpleNamespace(novelty=None, head=head)
    return base, Choices(structure="flat", classifiers={}), bundle


CATALOG = {p: {"product": p, "name": p, "category": "c"} for p in ("a", "b", "c")}


def test_rows_a_head_cannot_be_fitted_on_are_refit_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    base, choices, bundle = rows()
    assert refit_for_enrolment(bundle, base, choices, CATALOG).head.products == ("a", "b", "c")  # type: ignore[arg-type]

    def cannot(*args: Any, **kwargs: Any) -> Any:
        raise TrainingError("a classifier needs at least two classes")

    monkeypatch.setattr(models.train.enrolment, "fit_nodes", cannot)
    with pytest.raises(EnrolmentError) as caught:
        refit_for_enrolment(bundle, base, choices, CATALOG)  # type: ignore[arg-type]
    assert caught.value.code == "refit_failed" and "two classes" in caught.value.message


@pytest.mark.parametrize("bug", [RuntimeError("a bug in fitting"), ValueError("a scikit-learn bug")])
def test_a_bug_while_refitting_is_not_disguised_as_refit_failed(
    monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    base, choices, bundle = rows()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise bug

    monkeypatch.setattr(models.train.enrolment, "fit_nodes", broken)
    with pytest.raises(type(bug)) as caught:
        refit_for_enrolment(bundle, base, choices, CATALOG)  # type: ignore[arg-type]
    assert caught.value is bug


def test_rows_that_do_not_fit_together_are_invalid_model() -> None:
    base, _, _ = rows()
    with pytest.raises(InvalidModel, match="per feature row"):
        EnrolmentBase(base.features, base.products[:3], base.groups, base.synthetic, base.photos, base.sha256)
    with pytest.raises(InvalidModel, match="choices"):
        Choices.from_record({"structure": "flat"})


def stored(tmp_path: Path) -> tuple[EnrolmentStore, str]:
    requests = EnrolmentStore(tmp_path)
    return requests, requests.create("valve-1", [("a.jpg", b"x")], record={"name": "V", "category": "c"})


def test_a_corrupt_request_is_an_enrolment_error(tmp_path: Path) -> None:
    requests, enrolment = stored(tmp_path)
    (requests.root / enrolment / "request.json").write_text("{not json")
    for read in (requests.request, requests.get, requests.photos):
        with pytest.raises(EnrolmentError) as caught:
            read(enrolment)
        assert caught.value.code == CORRUPT_REQUEST and enrolment in caught.value.message
    assert requests.list() == []  # left out, the listing still answers


def test_a_request_missing_a_key_or_a_photo_is_an_enrolment_error(tmp_path: Path) -> None:
    requests, enrolment = stored(tmp_path)
    path = requests.root / enrolment / "request.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({key: value for key, value in document.items() if key != "product"}))
    with pytest.raises(EnrolmentError, match="lacks product") as caught:
        requests.get(enrolment)
    assert caught.value.code == CORRUPT_REQUEST
    path.write_text(json.dumps(document))
    shutil.rmtree(requests.root / enrolment / "photos")
    with pytest.raises(EnrolmentError, match=r"photo 000-a\.jpg is missing") as caught:
        requests.photos(enrolment)
    assert caught.value.code == CORRUPT_REQUEST


def test_an_unreadable_store_is_an_enrolment_error(tmp_path: Path) -> None:
    requests, enrolment = stored(tmp_path)
    status = requests.root / enrolment / "status.json"
    status.unlink()
    status.mkdir()  # os.replace cannot put a file there
    with pytest.raises(EnrolmentError) as caught:
        requests.done(enrolment, "v2", 1.0)
    assert caught.value.code == STORE_UNAVAILABLE
    shutil.rmtree(requests.root)
    requests.root.write_text("not a folder")
    with pytest.raises(EnrolmentError) as caught:
        requests.list()
    assert caught.value.code == STORE_UNAVAILABLE
    with pytest.raises(UnknownEnrolment):
        requests.get(enrolment)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store should be")
    with pytest.raises(EnrolmentError):
        EnrolmentStore(blocked)
