"""Shared fixtures: a real demo model trained once per session on Fashion-MNIST product photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def training_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from models.train import datasets

    root = tmp_path_factory.mktemp("training")
    datasets.export_training_folder(root / "images", per_class=20, seed=0)
    catalog = root / "catalog.json"
    catalog.write_text(json.dumps(list(datasets.catalog().values())))
    return root / "images", catalog


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, training_folder: tuple[Path, Path]) -> Path:
    from models.train.trainer import TrainOptions, train

    images, catalog = training_folder
    store = tmp_path_factory.mktemp("store")
    train(TrainOptions(images=images, catalog=catalog, out=store, name="fashion-test", show_progress=False))
    return store


@pytest.fixture(scope="session")
def recognizer(model_store: Path):  # type: ignore[no-untyped-def]
    from models.recognizer import Recognizer

    return Recognizer.load(model_store, device="cpu")


@pytest.fixture(scope="session")
def camera_photos(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    from models.train import datasets

    return datasets.export_camera_folder(tmp_path_factory.mktemp("camera"), per_class=3, seed=1)
