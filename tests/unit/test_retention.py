"""Which versions a store keeps, pruning the rest, and the content blobs versions share."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from models.answer.head import ProductHead, logistic_classifier
from models.bundle import load_model, write_model
from models.errors import ArtifactError, UnknownVersion
from models.store import blobs, retention
from models.store.versions import activate, current_version, previous_version, version_folders
from partsight.cli import main

CATALOG = {
    "p0": {"product": "p0", "name": "Zero", "category": "c1"},
    "p1": {"product": "p1", "name": "One", "category": "c2"},
}


def write_version(store: Path, index: int, *, trained_from: str | None = None, weight: float = 1.0) -> str:
    """A small version named by its index (so the order is known), its head's weights scaled by `weight`."""
    products = ("p0", "p1")
    coef = np.array([[weight, 0.0], [0.0, weight]], np.float32)
    head = ProductHead(products, ("c1", "c2"), {None: logistic_classifier(products, coef, np.zeros(2, np.float32))})
    version = f"v{index:03d}"
    choices = {"trained_version": trained_from} if trained_from else {}
    write_model(
        store,
        name="t",
        head=head,
        catalog=CATALOG,
        backbone={"name": "efficientnet_lite0"},
        version=version,
        extra={"choices": choices} if choices else None,
    )
    return version


def test_a_prune_keeps_the_newest_current_previous_pinned_and_their_trainings(tmp_path: Path) -> None:
    store = tmp_path / "store"
    trained = write_version(store, 0)
    names = [trained] + [write_version(store, i, trained_from=trained, weight=1 + i) for i in range(1, 10)]
    retention.pin(store, "v003", timeout_s=5)
    activate(store, "v005", timeout_s=5)  # a roll-back: v009 becomes previous
    assert (current_version(store), previous_version(store)) == ("v005", "v009")

    pruned = retention.prune(store, keep=2)

    kept = {folder.name for folder in version_folders(store)}
    assert kept == {"v000", "v003", "v005", "v008", "v009"}
    assert set(pruned.removed) == set(names) - kept
    assert pruned.kept["v000"] == ("base",) and "pinned" in pruned.kept["v003"]
    assert set(pruned.kept["v009"]) == {"newest", "previous"} and pruned.kept["v005"] == ("current",)
    assert load_model(store).version == "v005"  # what is served still loads and verifies
    assert retention.prune(store, keep=2).removed == ()  # nothing more to remove


def test_pins_survive_prunes_until_unpinned_and_a_wrong_name_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for index in range(4):
        write_version(store, index, weight=1 + index)
    assert retention.pin(store, "v000", timeout_s=5) and not retention.pin(store, "v000", timeout_s=5)
    with pytest.raises(UnknownVersion):
        retention.pin(store, "v999", timeout_s=5)
    with pytest.raises(UnknownVersion):
        retention.pin(store, "../v000", timeout_s=5)
    retention.prune(store, keep=1)
    assert {f.name for f in version_folders(store)} == {"v000", "v002", "v003"}
    assert retention.unpin(store, "v000", timeout_s=5) and not retention.unpin(store, "v000", timeout_s=5)
    retention.prune(store, keep=1)
    assert {f.name for f in version_folders(store)} == {"v002", "v003"}


def test_a_broken_pins_file_stops_the_prune_and_removes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for index in range(3):
        write_version(store, index, weight=1 + index)
    (store / retention.PINS_FILE).write_text('{"pinned": "v000"}')
    with pytest.raises(ArtifactError, match=r"pins\.json"):
        retention.prune(store, keep=1)
    assert len(version_folders(store)) == 3


def catalog_shard(version: Path) -> str:
    (shard,) = json.loads((version / "manifest.json").read_text())["catalog"]["shards"]
    return str(shard)


def test_versions_share_the_bytes_of_files_they_have_in_common(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = store / write_version(store, 0)
    grown = blobs.store_bytes(store)
    second = store / write_version(store, 1)  # the same head: every file but the manifest is the same
    third = store / write_version(store, 2, weight=3.0)  # a new head.npz, the same catalog and labels
    catalog = catalog_shard(first)
    assert catalog_shard(second) == catalog_shard(third) == catalog  # the same records: the same content name
    assert (first / catalog).samefile(second / catalog)
    assert (first / catalog).samefile(third / catalog)
    assert (first / "head.npz").samefile(second / "head.npz")
    assert not (first / "head.npz").samefile(third / "head.npz")
    manifest = (second / "manifest.json").stat().st_size
    assert blobs.store_bytes(store) - grown < 2 * manifest + (third / "head.npz").stat().st_size + 2048
    for version in (first, second, third):
        load_model(version)  # each still verifies on its own


def test_a_prune_frees_the_blobs_no_version_links(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old = [write_version(store, index, weight=1 + index) for index in range(3)]
    heads = {
        blobs.blob_path(store, json.loads((store / v / "manifest.json").read_text())["files"]["head.npz"]["sha256"])
        for v in old
    }
    assert all(path.is_file() for path in heads)
    pruned = retention.prune(store, keep=1)
    assert pruned.removed == ("v000",)  # v001 is the previous current
    assert sum(path.is_file() for path in heads) == 2 and pruned.freed_bytes > 0
    assert not (store / "v000").exists()


def test_a_changed_blob_is_never_linked_into_a_new_version(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = store / write_version(store, 0)
    catalog = first / catalog_shard(first)
    record = json.loads((first / "manifest.json").read_text())["files"][catalog.name]
    blob = blobs.blob_path(store, record["sha256"])
    assert blob.samefile(catalog)
    os.chmod(blob, 0o644)
    blob.write_text(blob.read_text().replace("Zero", "Zer0"))  # changed in place: v000 no longer verifies
    second = store / write_version(store, 1)  # written and verified: its catalog is a good copy
    assert load_model(second).catalog["p0"]["name"] == "Zero"
    with pytest.raises(ArtifactError, match=rf"{re.escape(catalog.name)} has sha256"):
        load_model(first)


def test_stale_staging_folders_are_removed_by_a_prune(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_version(store, 0)
    stale, fresh = store / ".staging-dead", store / ".staging-busy"
    stale.mkdir()
    fresh.mkdir()
    hour_ago = os.stat(stale).st_mtime - 2 * retention.STALE_STAGING_S
    os.utime(stale, (hour_ago, hour_ago))
    retention.prune(store, keep=5)
    assert not stale.exists() and fresh.exists()


def test_models_command_pins_prunes_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    for index in range(5):
        write_version(store, index, weight=1 + index)
    assert main(["models", "--store", str(store), "--pin", "v001"]) == 0
    assert "v001 is pinned" in capsys.readouterr().out
    assert main(["models", "--store", str(store), "--prune", "--keep", "1"]) == 0
    assert "removed 2 version(s): v000, v002" in capsys.readouterr().out
    assert main(["models", "--store", str(store)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == ["v001", "v003", "*"]
    assert "[pinned]" in listing[0] and "[previous]" in listing[1] and "v004" in listing[2]
    assert main(["models", "--store", str(store), "--pin", "v000"]) == 1  # pruned: no such version
    assert "no version 'v000'" in capsys.readouterr().err
    assert main(["models", "--store", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_keep_versions_is_read_once_and_checked(tmp_path: Path) -> None:
    from broker.errors import SettingsError

    assert retention.keep_from_env({}) == retention.DEFAULT_KEEP_VERSIONS
    assert retention.keep_from_env({"PARTSIGHT_KEEP_VERSIONS": "3"}) == 3
    with pytest.raises(SettingsError, match="PARTSIGHT_KEEP_VERSIONS"):
        retention.keep_from_env({"PARTSIGHT_KEEP_VERSIONS": "0"})


def test_a_file_is_read_for_its_sha256_once_in_a_scope_and_every_time_outside(tmp_path: Path) -> None:
    from models.store.versions import file_sha256, hashing_once

    blob = tmp_path / "blob.npz"
    blob.write_bytes(b"a" * 64)
    first = file_sha256(blob)
    stat = blob.stat()
    with hashing_once():
        assert file_sha256(blob) == first
        blob.write_bytes(b"b" * 64)  # same inode and size; the modification time put back: the memo answers
        os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with hashing_once():  # an inner scope shares the outer's
            assert file_sha256(blob) == first
        blob.write_bytes(b"c" * 65)  # another size: read again
        assert file_sha256(blob) != first
    blob.write_bytes(b"b" * 64)  # outside a scope a file is always read
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(blob) != first


def test_a_load_verifies_every_file_and_a_file_tampered_after_a_load_is_refused_by_the_next(tmp_path: Path) -> None:
    store = tmp_path / "store"
    version = write_model(
        store,
        name="m",
        head=ProductHead(("a", "b"), ("x", "x"), {None: logistic_classifier(("a", "b"), np.eye(2, 4), np.zeros(2))}),
        catalog={p: {"product": p, "name": p, "category": "x"} for p in ("a", "b")},
        backbone={"name": "efficientnet_lite0", "feature_dim": 4},
    )
    load_model(store)
    head = version / "head.npz"
    data = bytearray(head.read_bytes())
    data[-10] ^= 0x01
    head.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"head\.npz has sha256"):
        load_model(store)


def _small_version(store: Path, *, keep_verified: bool = True) -> Path:
    return write_model(
        store,
        name="m",
        head=ProductHead(("a", "b"), ("x", "x"), {None: logistic_classifier(("a", "b"), np.eye(2, 4), np.zeros(2))}),
        catalog={p: {"product": p, "name": p, "category": "x"} for p in ("a", "b")},
        backbone={"name": "efficientnet_lite0", "feature_dim": 4},
        keep_verified=keep_verified,
    )


def test_the_version_a_process_just_wrote_is_served_without_reading_it_again_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.bundle
    from models.store import versions

    version = _small_version(tmp_path / "store")
    verified: list[str] = []

    def counted(folder: Path, manifest: dict[str, object], name: str) -> Path:
        verified.append(name)
        return versions.verify_file(folder, manifest, name)

    monkeypatch.setattr(models.bundle, "verify_file", counted)

    first = load_model(tmp_path / "store")  # what a worker does once its own enrolment moved `current`
    assert verified == [] and first.path == version and first.head.products == ("a", "b")
    assert load_model(version).version == first.version and "head.npz" in verified  # the next load reads every file

    _small_version(tmp_path / "store")
    load_model(version)  # another version of the store served: the one kept is let go
    verified.clear()
    load_model(tmp_path / "store")
    assert "head.npz" in verified

    verified.clear()
    other = _small_version(tmp_path / "other", keep_verified=False)  # a training's: nothing kept
    load_model(other)
    assert "head.npz" in verified


def test_a_file_changed_after_the_write_is_verified_by_the_first_load(tmp_path: Path) -> None:
    version = _small_version(tmp_path / "store")
    head = version / "head.npz"
    data = bytearray(head.read_bytes())
    data[-10] ^= 0x01
    os.unlink(head)  # a new file in its place (the blob it linked stays as it was)
    head.write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=r"head\.npz has sha256"):
        load_model(version)


def test_a_write_whose_current_did_not_move_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import models.bundle

    def refused(store: Path, version: str) -> None:
        raise ArtifactError("the store's lock was lost")

    monkeypatch.setattr(models.bundle, "point_current", refused)
    with pytest.raises(ArtifactError, match="lock was lost"):
        _small_version(tmp_path / "store")
    assert models.bundle._just_written._kept is None  # what a worker would otherwise hold until its next enrolment
