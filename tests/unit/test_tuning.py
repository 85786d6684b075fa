"""`partsight train --tune`: the backbone's last blocks tuned to the catalog, kept only where they beat the frozen
backbone on held-out photos, and shipped in the version (its own weights and its own ONNX graph)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from models.errors import TrainingError
from models.train.tuning import TuneOptions, held_out_folds, hidden_products, judging_half, learning_curve
from tests.unit.drawn import drawn_catalog


def test_each_fold_holds_out_about_a_quarter_of_each_product_and_keeps_photos_to_fit_on() -> None:
    labels = np.array(["a"] * 8 + ["b"] * 2 + ["c"] + ["d"] * 3)
    fold = held_out_folds(labels, 0.25, 2, seed=3)
    assert [int((fold[labels == "a"] == f).sum()) for f in (-1, 0, 1)] == [4, 2, 2]  # disjoint quarters
    assert [int((fold[labels == "b"] == f).sum()) for f in (-1, 0, 1)] == [0, 1, 1]  # each fold fits on the other
    assert fold[labels == "c"].tolist() == [-1]  # a lone photo is only fitted on
    assert [int((fold[labels == "d"] == f).sum()) for f in (-1, 0, 1)] == [1, 1, 1]
    assert (held_out_folds(labels, 0.25, 2, seed=3) == fold).all()
    assert held_out_folds(np.array(["e"] * 2), 0.25, 3, seed=0).tolist() in ([0, 1], [1, 0])  # a third fold: none
    judging = judging_half(np.array(["a", "a", "b", "a", "b", "c"]))
    assert judging.tolist() == [False, True, False, False, True, False]  # half of each product's judge; c only stops


def test_each_fold_hides_its_own_fifth_of_the_products_where_two_are_left_to_learn() -> None:
    groups = hidden_products(10, 0.2, 2, seed=0)
    assert [len(group) for group in groups] == [2, 2] and not set(groups[0]) & set(groups[1])
    assert all(0 <= product < 10 for group in groups for product in group)
    assert [group.tolist() for group in hidden_products(10, 0.2, 2, seed=0)] == [group.tolist() for group in groups]
    assert [len(group) for group in hidden_products(7, 0.2, 2, seed=0)] == [1, 1]
    assert [len(group) for group in hidden_products(4, 0.2, 2, seed=0)] == [0, 0]  # a fifth of four is no product
    assert [len(group) for group in hidden_products(2, 0.5, 1, seed=0)] == [0]  # one would be left to learn


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"held_share": 1.0},
        {"held_share": 0.5},  # two folds of half the photos leave none to fit on
        {"folds": 0},
        {"learning_rate": 0.0},
        {"budget_s": -5.0},
        {"batch_size": 1},
        {"stop_on": "accuracy"},
        {"hide_share": 0.5},  # two folds hiding half the products each: none left that both learn
        {"hide_share": -0.1},
    ],
)
def test_settings_that_cannot_tune_are_refused_before_any_work(bad: dict[str, float]) -> None:
    with pytest.raises(TrainingError):
        TuneOptions(**bad)  # type: ignore[arg-type]


def test_a_tuned_backbone_ships_in_its_version_and_every_engine_runs_it(tmp_path: Path) -> None:
    import torch

    from models.extract.backbones import get_backbone
    from models.recognizer import Recognizer
    from models.store.versions import file_sha256
    from models.train.enrolment import enrol
    from models.train.trainer import TrainOptions, train
    from partsight.enrol_cli import LocalFeatures

    products = [("fittings", "red-valve", (200, 30, 30)), ("pumps", "blue-pump", (30, 40, 200))]
    images, catalog = drawn_catalog(tmp_path, [*products, ("pumps", "green-pump", (30, 170, 60))])
    base = TrainOptions(
        images=images, catalog=catalog, out=tmp_path / "store", show_progress=False, classifiers=("logistic",)
    )
    packaged = file_sha256(get_backbone("efficientnet_lite0").default_weights())

    refused = train(replace(base, tune=TuneOptions(epochs=1, margin=2.0)))
    manifest = json.loads((refused / "manifest.json").read_text())
    assert manifest["training"]["tuning"]["kept"] is False  # it cannot beat the frozen one by 200 points
    assert "weights_file" not in manifest["backbone"] and manifest["backbone"]["weights_sha256"] == packaged
    assert not (refused / "backbone.pt").exists()

    kept = train(replace(base, tune=TuneOptions(epochs=2, margin=-1.0)))  # kept, whatever
    manifest = json.loads((kept / "manifest.json").read_text())
    tuning = manifest["training"]["tuning"]
    assert tuning["kept"] is True and tuning["photos"]["views"] == 5 and len(tuning["folds"]) == 2
    assert 1 <= len([epoch for epoch in tuning["epochs"] if epoch["fold"] == "all"]) <= 2  # then every photo
    assert tuning["open_set"]["judged"] is False  # three products: no fold hid one, so no open set to weigh
    assert manifest["backbone"]["weights_file"] == "backbone.pt" and "backbone.pt" in manifest["files"]
    assert manifest["backbone"]["weights_sha256"] == file_sha256(kept / "backbone.pt") != packaged
    photos = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in sorted(images.rglob("*.jpg"))]
    )
    on_torch = Recognizer.load(kept, device="cpu", engine="torch").features(photos)
    on_onnx = Recognizer.load(kept, device="cpu", engine="onnxruntime").features(photos)
    np.testing.assert_allclose(on_torch, on_onnx, atol=1e-3)  # both run the version's own tuned weights
    photo = Image.new("RGB", (96, 96), (225, 225, 220))
    ImageDraw.Draw(photo).rectangle((20, 20, 70, 60), fill=(240, 140, 20))
    shots = []
    for angle in (0, 10, 20, 30):
        buffer = io.BytesIO()
        photo.rotate(angle, fillcolor=(225, 225, 220)).save(buffer, "JPEG")
        shots.append((f"orange-{angle}.jpg", buffer.getvalue()))
    enrolled = enrol(
        tmp_path / "store",
        "orange-gauge",
        shots,
        record={"name": "Orange gauge", "category": "fittings"},
        features_of=LocalFeatures(device="cpu", weights=None),
    )
    assert enrolled.new_product and file_sha256(enrolled.path / "backbone.pt") == file_sha256(kept / "backbone.pt")
    after = Recognizer.load(enrolled.path, device="cpu", engine="torch")  # the enrolled version runs the tuned one
    assert "orange-gauge" in after.bundle.head.products
    tuned = torch.load(kept / "backbone.pt", weights_only=True)
    imagenet = torch.load(get_backbone("efficientnet_lite0").default_weights(), weights_only=True)
    changed = {
        name.split(".")[1]
        for name in tuned
        if name.startswith("_blocks.") and not torch.equal(tuned[name], imagenet[name])
    }
    assert changed and min(int(block) for block in changed) >= 11  # the blocks before the first tuned one stay


def test_the_novelty_score_of_a_tuned_version_is_calibrated_on_products_its_folds_never_learned(
    tmp_path: Path,
) -> None:
    """Five products: each of the two folds hides one from its tuning, and the novelty score's leave-products-out
    folds are those two, on each fold's own network, with the photos it held out as the known ones (not every
    product once, on the shipped network that learned them all and trained on every photo)."""
    from models.train.trainer import TrainOptions, train

    colours = [(200, 30, 30), (30, 40, 200), (30, 170, 60), (240, 140, 20), (120, 40, 160)]
    products = [("parts", f"part-{index}", colour) for index, colour in enumerate(colours)]
    images, catalog = drawn_catalog(tmp_path, products)
    options = TrainOptions(
        images=images, catalog=catalog, out=tmp_path / "store", show_progress=False, classifiers=("logistic",)
    )
    version = train(replace(options, tune=TuneOptions(epochs=1, margin=-1.0)))
    report = json.loads((version / "report.json").read_text())
    assert report["tuning"]["kept"] and [fold["hidden_products"] for fold in report["tuning"]["folds"]] == [1, 1]
    aurocs = [fold["open_set_auroc"] for fold in report["tuning"]["folds"]]  # the probes' refusal of the hidden one
    assert all(0.0 <= entry[kind] <= 1.0 for entry in aurocs for kind in ("frozen", "tuned"))
    assert report["tuning"]["open_set_auroc"]["tuned"] == pytest.approx(np.mean([a["tuned"] for a in aurocs]), abs=1e-4)
    assert report["open_set"]["networks"].startswith("the tuning's folds' (2)")
    never_seen = [row["product"] for row in report["open_set_by_product"] if row["never_seen_frames"]]
    assert len(never_seen) == 2 and all(row["never_seen_frames"] in (0, 4) for row in report["open_set_by_product"])
    # the known photos scored: those each fold held out of its tuning (one of each of the four products it learned)
    held = [fold["photos"]["stopping"] + fold["photos"]["judging"] for fold in report["tuning"]["folds"]]
    assert held == [4, 4] and sum(row["known_frames"] for row in report["open_set_by_product"]) == 8
    choices = json.loads((version / "manifest.json").read_text())["choices"]
    assert "tuning's folds' networks" in choices["novelty_kept"]  # refits keep this score: they cannot rebuild it
    verdict = report["tuning"]["open_set"]  # the shipped path on the folds' hidden products, both networks
    assert verdict["kept"] is True and verdict["margin"] == -1.0
    assert verdict["tuned"]["folds"] == verdict["frozen"]["folds"] == 2
    assert all(0.0 <= verdict[side]["known_answered_right"] <= 1.0 for side in ("tuned", "frozen"))

    untuned = train(options)
    frozen = json.loads((untuned / "report.json").read_text())  # every product hidden once
    assert frozen["open_set"]["networks"] == "the shipped one's"
    assert json.loads((untuned / "manifest.json").read_text())["choices"]["novelty_kept"] == ""
    assert all(row["never_seen_frames"] == 4 for row in frozen["open_set_by_product"])


def test_tuning_runs_on_a_gpu_only_where_one_is_named_or_found(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from models.extract.features import choose_device  # what training's tuning and its features both run on

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(choose_device("auto")) == "cpu"  # CI: no GPU, the CPU without a word
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert str(choose_device("auto")) == "cuda"
    assert str(choose_device("cuda:1")) == "cuda:1"
    assert str(choose_device("cpu")) == "cpu"


def _small_photos(count: int, colour: tuple[int, int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(sum(colour))
    photos = []
    for _ in range(count):
        photo = np.full((64, 64, 3), 225, np.uint8)
        x, y = (int(v) for v in rng.integers(4, 30, 2))
        photo[y : y + 28, x : x + 28] = colour
        photos.append(photo)
    return photos


def tuned_on_two_colours(each: int, options: TuneOptions, clock: Callable[[], float]) -> Any:
    """`tune` on `each` small photos of a red and of a blue product, timed by `clock`."""
    import models.train.tuning as tuning  # at call time: a test may have replaced one of its parts
    from models.extract.backbones import get_backbone, load_network

    spec = get_backbone("efficientnet_lite0")
    network, _ = load_network(spec)
    photos = _small_photos(each, (200, 30, 30)) + _small_photos(each, (30, 40, 200))
    labels = ["red"] * each + ["blue"] * each
    return tuning.tune(
        network, lambda i: [photos[i]], labels, views=1, mean=spec.mean, std=spec.std, options=options, clock=clock
    )


def test_a_learning_curve_scores_the_test_photos_by_their_own_labels_before_and_after_each_epoch() -> None:
    """bench.tuning_curves' curve: epoch 0 is the frozen network (the same whatever follows), every epoch after it
    is scored on the test photos (other shades, labelled the other way round here, so every answer is wrong), only
    the tuned blocks move, and the network passed in is left as it was."""
    import torch

    from models.extract.backbones import get_backbone, load_network

    spec = get_backbone("efficientnet_lite0")
    network, _ = load_network(spec)
    before = {name: value.clone() for name, value in network.state_dict().items()}
    photos = _small_photos(6, (200, 30, 30)) + _small_photos(6, (30, 40, 200))
    tests = _small_photos(4, (180, 50, 40)) + _small_photos(4, (40, 60, 180))
    labels, swapped = ["red"] * 6 + ["blue"] * 6, ["blue"] * 4 + ["red"] * 4

    def curve_of(epochs: int, test_labels: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return learning_curve(
            network,
            lambda i: [photos[i]],
            labels,
            tests.__getitem__,
            test_labels,
            views=1,
            mean=spec.mean,
            std=spec.std,
            options=TuneOptions(epochs=epochs, first_block=14),
        )

    one, _ = curve_of(1, swapped)
    curve, state = curve_of(2, swapped)
    assert [point["epoch"] for point in curve] == [0, 1, 2] and one[0] == curve[0]
    assert all(point["test_top1"] == 0.0 and point["probe_top1"] == 0.0 for point in curve)  # the labels are read
    assert curve[-1]["test_loss"] > curve[0]["test_loss"]  # learning the red and the blue, it grows surer: of wrong
    assert all(torch.equal(value, network.state_dict()[name]) for name, value in before.items())
    moved = {".".join(name.split(".")[:2]) for name, value in state.items() if not torch.equal(value, before[name])}
    assert moved and all(name.startswith(("_blocks.14", "_blocks.15", "_conv_head", "_bn1")) for name in moved)
    with pytest.raises(TrainingError, match="test photos of those products"):
        curve_of(1, ["green"] * 8)


def test_too_few_photos_leave_the_backbone_frozen_and_five_each_run_every_epoch() -> None:
    untuned = tuned_on_two_colours(1, TuneOptions(), time.monotonic)
    assert not untuned.kept and untuned.state == {} and "two photos" in untuned.record["why"]

    result = tuned_on_two_colours(5, TuneOptions(epochs=3, patience=1, margin=-1.0), time.monotonic)
    record = result.record
    # each of the two folds holds out one photo of each product: nothing to stop on, two to judge
    assert record["photos"]["stopping"] == 0 and [fold["judged"] for fold in record["folds"]] == [2, 2]
    assert [(epoch["fold"], epoch["held_top1"]) for epoch in record["epochs"]] == [
        *[(0, None)] * 3,
        *[(1, None)] * 3,
        *[("all", None)] * 3,  # kept (margin -1): the tuning on every photo, for the folds' three epochs
    ]
    assert record["best_epoch"] == 3 and record["tuned_on"] == "every photo" and record["photos"]["all"] == 10
    assert record["open_set_auroc"] is None and record["folds"][0]["hidden_products"] == 0  # two products: none hid


def test_a_budget_stops_tuning_after_the_epoch_that_passes_it_and_keeps_that_epoch() -> None:
    ticks = count(step=10.0)  # every look at the clock is ten seconds on: the first epoch passes a 15 s budget
    result = tuned_on_two_colours(8, TuneOptions(epochs=5, budget_s=15.0, margin=-1.0), lambda: next(ticks))
    record = result.record
    assert record["stopped"] == "budget" and len(record["epochs"]) == 1 and record["best_epoch"] == 1
    assert len(record["folds"]) == 1 and record["tuned_on"] == "the first fold"  # no time for the second, nor all
    assert result.kept and result.state  # the one epoch's weights, kept (margin -1)


def test_a_budget_that_ends_the_tuning_in_a_fold_that_hid_products_leaves_the_backbone_frozen() -> None:
    """Five products: the first fold never learns one of them, so its network, all the budget leaves, is not
    kept (it would ship blind to a fifth of the catalog)."""
    from models.extract.backbones import get_backbone, load_network
    from models.train.tuning import tune

    spec = get_backbone("efficientnet_lite0")
    network, _ = load_network(spec)
    colours = [(200, 30, 30), (30, 40, 200), (30, 170, 60), (240, 140, 20), (120, 40, 160)]
    photos = [photo for colour in colours for photo in _small_photos(4, colour)]
    labels = [str(colour) for colour in colours for _ in range(4)]
    ticks = count(step=10.0)
    options = TuneOptions(epochs=3, budget_s=15.0, margin=-1.0)
    result = tune(
        network,
        lambda i: [photos[i]],
        labels,
        views=1,
        mean=spec.mean,
        std=spec.std,
        options=options,
        clock=lambda: next(ticks),
    )
    record = result.record
    assert record["folds"][0]["hidden_products"] == 1 and record["stopped"] == "budget"
    assert not result.kept and "never learned 1 products" in record["why"]


def test_a_fold_that_ends_past_the_budget_ends_the_tuning() -> None:
    """Fold 0 runs its one epoch to the end (stopped by `epochs`, not `budget`) past the budget: no second fold."""
    ticks = count(step=10.0)
    result = tuned_on_two_colours(8, TuneOptions(epochs=1, budget_s=15.0, margin=-1.0), lambda: next(ticks))
    record = result.record
    assert [fold["stopped"] for fold in record["folds"]] == ["epochs"]  # the second fold never started
    assert record["stopped"] == "budget" and record["tuned_on"] == "the first fold" and result.kept


def test_a_run_on_every_photo_that_the_budget_cuts_short_is_not_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both folds within the budget; the run on every photo passes it after its first of three epochs: never
    judged, it is not what ships (the first fold's network is)."""
    import models.train.tuning as tuning

    now = [0.0]
    real_epochs = tuning._epochs

    def epochs(*args: Any, **kwargs: Any) -> Any:
        if len(args[2][1]) == 10:  # the run on every photo: the clock is past the budget from here on
            now[0] += 1000.0
        return real_epochs(*args, **kwargs)

    monkeypatch.setattr(tuning, "_epochs", epochs)
    result = tuned_on_two_colours(5, TuneOptions(epochs=3, budget_s=500.0, margin=-1.0), lambda: now[0])
    record = result.record
    assert [epoch["fold"] for epoch in record["epochs"]] == [0, 0, 0, 1, 1, 1, "all"]  # cut after one epoch
    assert record["stopped"] == "budget" and record["tuned_on"] == "the first fold" and record["best_epoch"] == 3
    assert result.kept and result.state


def test_a_tuning_the_open_set_verdict_refuses_trains_the_version_on_the_frozen_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept by its probe's top-1, refused by the open set (the real verdict's figures, its decision turned): the
    version is the frozen backbone's, calibrated as an untuned training is, and the record says why."""
    from models.extract.backbones import get_backbone
    from models.store.versions import file_sha256
    from models.train import trainer
    from models.train.open_set_verdict import open_set_verdict

    def refused(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        verdict = open_set_verdict(*args, **kwargs)
        return None if verdict is None else {**verdict, "kept": False}

    monkeypatch.setattr(trainer, "open_set_verdict", refused)
    colours = [(200, 30, 30), (30, 40, 200), (30, 170, 60), (240, 140, 20), (120, 40, 160)]
    images, catalog = drawn_catalog(tmp_path, [("parts", f"part-{i}", colour) for i, colour in enumerate(colours)])
    options = trainer.TrainOptions(
        images=images, catalog=catalog, out=tmp_path / "store", show_progress=False, classifiers=("logistic",)
    )
    version = trainer.train(replace(options, tune=TuneOptions(epochs=1, margin=-1.0)))
    report = json.loads((version / "report.json").read_text())
    manifest = json.loads((version / "manifest.json").read_text())
    assert report["tuning"]["kept"] is False and report["tuning"]["open_set"]["kept"] is False
    assert "known photos right" in report["tuning"]["why"]
    assert "weights_file" not in manifest["backbone"] and not (version / "backbone.pt").exists()
    assert manifest["backbone"]["weights_sha256"] == file_sha256(get_backbone("efficientnet_lite0").default_weights())
    assert report["open_set"]["networks"] == "the shipped one's" and manifest["choices"]["novelty_kept"] == ""
    assert all(row["never_seen_frames"] == 4 for row in report["open_set_by_product"])  # every product hidden once
