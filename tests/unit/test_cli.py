"""The console script's train command fails clearly and writes nothing when its input is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.harness import ROOT


def test_train_with_a_product_missing_from_the_catalog_fails_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "images" / "valves" / "v-1").mkdir(parents=True)
    (tmp_path / "images" / "valves" / "v-2").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "valves" / "v-1" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "valves" / "v-2" / "a.png")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([{"product": "v-1", "name": "Valve", "category": "valves"}]))
    out = tmp_path / "store"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "partsight.cli",
            "train",
            "--images",
            str(tmp_path / "images"),
            "--catalog",
            str(catalog),
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "product 'v-2' is not in the catalog" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "partsight.cli", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for command in ("bridge", "worker", "camera", "train", "augment", "models", "demo"):
        assert command in result.stdout


def test_augment_writes_the_synthetic_copies_and_names_an_unknown_transform(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (120, 90), (230, 230, 230))
    ImageDraw.Draw(photo).rectangle((30, 20, 80, 60), fill=(20, 120, 200))
    photo.save(tmp_path / "part.jpg")
    base = [sys.executable, "-m", "partsight.cli", "augment", "--image", str(tmp_path / "part.jpg"), "--out"]
    result = subprocess.run(
        [*base, str(tmp_path / "out"), "--copies", "3"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"part-synthetic-0{i}.jpg" for i in range(3)]
    assert all(Image.open(p).size == (120, 90) for p in written)
    result = subprocess.run(
        [*base, str(tmp_path / "x"), "--transforms", "rotate,sepia"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "unknown transform(s) sepia" in result.stderr and "Traceback" not in result.stderr


def partsight_models(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "partsight.cli", "models", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_models_lists_verified_versions_and_refuses_to_point_current_at_a_tampered_one(
    model_store: Path, tmp_path: Path
) -> None:
    import shutil

    from tests.harness import copy_version

    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True)
    original = (store / "current").resolve().name
    copy_version(store, original, "zz-tampered", tamper=True)
    copy_version(store, original, "zz-good")

    listing = partsight_models("--store", str(store))
    assert listing.returncode == 1, listing.stdout  # a broken version is in the store
    lines = {line[2:].split()[0]: line for line in listing.stdout.splitlines()}
    assert lines[original].startswith("*") and lines[original].endswith("verified")
    assert "BROKEN" in lines["zz-tampered"] and "head.npz has sha256" in lines["zz-tampered"]

    refused = partsight_models("--store", str(store), "--use", "zz-tampered")
    assert refused.returncode == 1 and "refused" in refused.stderr and "Traceback" not in refused.stderr
    assert (store / "current").resolve().name == original  # untouched

    assert partsight_models("--store", str(store), "--use", "../elsewhere").returncode == 1
    used = partsight_models("--store", str(store), "--use", "zz-good")
    assert used.returncode == 0, used.stderr
    assert (store / "current").resolve().name == "zz-good"
