"""The product distance (models.answer.density) and where the novelty score takes it in (models.train.open_set)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.answer.answerer import Answerer
from models.answer.classifiers import sigmoid
from models.answer.density import fit_density
from models.answer.gallery import Gallery, build_gallery
from models.answer.head import ProductHead, logistic_classifier
from models.answer.novelty import ALL_INPUTS, INPUTS, NoveltyModel, fit_novelty
from models.bundle import load_model, write_model
from models.errors import ArtifactError, InvalidModel, TrainingError
from models.train.open_set import MIN_HIDDEN_PRODUCTS, FoldAnswers, chosen_score, distance_verdict


def two_products(rng: np.random.Generator, photos: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two products 0 and 1 in 6-d: their photos spread widely along axis 0 (pose) and hardly along axes 2..5; the
    products differ along axis 1."""
    rows, labels = [], []
    for product in (0, 1):
        x = np.zeros((photos, 6))
        x[:, 0] = rng.normal(0, 1.0, photos)
        x[:, 1] = 3.0 * product + rng.normal(0, 0.05, photos)
        x[:, 2:] = rng.normal(0, 0.05, (photos, 4))
        rows.append(x)
        labels.append(np.full(photos, product))
    return np.concatenate(rows).astype(np.float32), np.concatenate(labels)


def test_the_distance_counts_a_step_where_photos_never_vary_for_more_than_one_where_they_do() -> None:
    features, labels = two_products(np.random.default_rng(0))
    density = fit_density(features, labels, 2)
    assert density is not None and density.components == 6
    own = density.nearest_distance(features)
    assert np.median(own) < 0.5  # a product's own photos: at most about one (shrunk) variance per component
    along_pose = np.array([[2.0, 0, 0, 0, 0, 0]], dtype=np.float32)  # two of product 0's spreads along pose
    along_detail = np.array([[0, 0, 0.5, 0, 0, 0]], dtype=np.float32)  # a quarter as far, along a detail
    assert np.linalg.norm(along_detail) < np.linalg.norm(along_pose) / 3  # nearer by Euclid (and cosine)
    assert density.nearest_distance(along_detail)[0] > density.nearest_distance(along_pose)[0] + 1.0
    # by hand: the squared distance to product 0's mean, whitened, per component, logged
    d = density.distances(along_pose)
    assert d.shape == (1, 2) and d[0, 0] < d[0, 1]
    for product in (0, 1):  # by hand from the photos: each product's whitened mean, not the stored means
        mean = density.whitened(features[labels == product].mean(axis=0, keepdims=True))
        by_hand = ((density.whitened(along_pose) - mean) ** 2).sum() / 6
        assert d[0, product] == pytest.approx(by_hand, rel=1e-4)
        only = np.arange(2)[None, :] == product
        assert density.nearest_distance(along_pose, only)[0] == pytest.approx(np.log(by_hand), abs=1e-4)
    assert density.nearest_distance(along_pose)[0] == pytest.approx(np.log(d[0, 0]), abs=1e-5)


def test_the_distance_on_a_line_is_to_its_products_alone() -> None:
    features, labels = two_products(np.random.default_rng(1))
    density = fit_density(features, labels, 2)
    assert density is not None
    photo_of_1 = features[labels == 1][:1]
    whole = density.nearest_distance(photo_of_1)[0]
    only_0 = density.nearest_distance(photo_of_1, np.array([[True, False]]))[0]
    assert only_0 > whole + 3.0  # product 1's photo is far from everything on a line of product 0 alone
    assert only_0 == pytest.approx(np.log(density.distances(photo_of_1)[0, 0]), abs=1e-5)


def test_a_new_products_photos_are_near_their_own_mean_left_out() -> None:
    rng = np.random.default_rng(2)
    features, labels = two_products(rng)
    density = fit_density(features, labels, 2)
    assert density is not None
    new = np.zeros((10, 6), dtype=np.float32)
    new[:, 0] = rng.normal(0, 1.0, 10)
    new[:, 3] = 2.0 + rng.normal(0, 0.05, 10)  # a third product, apart along a detail
    alone = density.nearest_distance(new)
    with_its_mean = density.nearest_distance_with(new)
    assert np.median(alone) > np.median(with_its_mean) + 3.0
    z = density.whitened(new)
    others = (z[1:]).mean(axis=0)  # photo 0's own mean without it
    own_0 = float(((z[0] - others) ** 2).sum() / density.components)
    assert with_its_mean[0] == pytest.approx(np.log(min(own_0, density.distances(new[:1]).min())), abs=1e-4)
    assert density.nearest_distance_with(new[:1])[0] == pytest.approx(alone[0])  # one photo: no mean of others


def test_a_density_fitted_on_a_sample_of_the_rows_keeps_their_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.answer import density as module

    rng = np.random.default_rng(8)
    products, photos = 100, 4
    centres = rng.normal(0, 1.0, (products, 6))
    labels = np.repeat(np.arange(products), photos)
    features = (centres[labels] + rng.normal(0, 0.1, (len(labels), 6))).astype(np.float32)
    whole = fit_density(features, labels, products)
    monkeypatch.setattr(module, "MAX_FIT_ROWS", 200)  # half the rows: 100 products' means from all 400
    sampled = fit_density(features, labels, products)
    assert whole is not None and sampled is not None
    own_whole, own_sampled = whole.nearest_distance(features), sampled.nearest_distance(features)
    assert abs(float(np.median(own_sampled) - np.median(own_whole))) < 0.3  # within a third of a variance
    # by the sample's rows less its products, the covariance was 400 / (200 - 100) = 4 times too large: log 4 = 1.4
    assert float(np.median(own_whole)) < 0.3


def test_too_few_rows_make_no_density() -> None:
    features = np.eye(3, 4, dtype=np.float32)
    assert fit_density(features, np.array([0, 1, 2]), 3) is None  # one photo a product: no spread to whiten by
    assert fit_density(features, np.array([0, 0, 2]), 3) is None  # a product without a photo
    assert fit_density(np.eye(4, dtype=np.float32), np.array([0, 0, 0, 1]), 2) is not None


# ---------------------------------------------------------------- the verdict


def fold_answers_of(rng: np.random.Generator, *, distance_tells: bool, folds: int = 3) -> FoldAnswers:
    """Frames of `folds` folds whose five inputs tell never-seen from known weakly; the product distance tells them
    apart strongly (`distance_tells`) or is noise."""
    per_fold_known, per_fold_unseen = 150, 100
    parts = []
    for fold in range(folds):
        unseen = np.r_[np.zeros(per_fold_known, bool), np.ones(per_fold_unseen, bool)]
        x = rng.normal(0, 1, (len(unseen), len(ALL_INPUTS)))
        x[:, 0] += np.where(unseen, -0.3, 0.3)  # confidence: a weak signal
        x[:, -1] = rng.normal(0, 1, len(unseen)) + (np.where(unseen, 2.0, -2.0) if distance_tells else 0.0)
        parts.append((unseen, x, np.full(len(unseen), fold)))
    unseen = np.concatenate([p[0] for p in parts])
    correct = ~unseen & (rng.random(len(unseen)) < 0.9)
    products = rng.integers(0, 60, len(unseen)).astype(str)
    return FoldAnswers(
        products=products,
        unseen=unseen,
        correct=correct,
        category_conf=np.full(len(unseen), 0.9),
        category_hit=np.ones(len(unseen), bool),
        inputs=np.concatenate([p[1] for p in parts]),
        predicted=np.where(correct, products, "other"),
        fold=np.concatenate([p[2] for p in parts]),
    )


def test_the_score_takes_the_distance_where_it_tells_never_seen_frames_apart_out_of_fold() -> None:
    answers = fold_answers_of(np.random.default_rng(3), distance_tells=True)
    verdict = distance_verdict(answers, 0.8)
    assert verdict is not None and verdict["kept"]
    assert verdict["with"]["known_answered_right"] > verdict["without"]["known_answered_right"] + 0.3
    novelty, record = chosen_score(answers, 0.8)
    assert record == verdict and novelty.inputs == ALL_INPUTS and novelty.uses_distance
    fitted = fit_novelty(answers.inputs, answers.unseen, 0.8, answered_right=answers.correct, use=ALL_INPUTS)
    np.testing.assert_allclose(novelty.weights, fitted.weights)
    assert novelty.weights[-1] > 0  # farther from every product: more novel
    assert (novelty.score(answers.inputs)[answers.unseen] >= novelty.threshold).mean() >= 0.8


def test_the_score_leaves_out_a_distance_that_is_noise_or_missing() -> None:
    answers = fold_answers_of(np.random.default_rng(4), distance_tells=False)
    verdict = distance_verdict(answers, 0.8)
    assert verdict is not None and not verdict["kept"]
    novelty, _ = chosen_score(answers, 0.8)
    assert novelty.inputs == INPUTS and not novelty.uses_distance
    inputs = answers.inputs.copy()
    inputs[:5, -1] = np.nan  # a fold whose gallery had no density
    telling = fold_answers_of(np.random.default_rng(3), distance_tells=True)
    assert distance_verdict(replace(telling, inputs=np.where(np.isnan(inputs), np.nan, telling.inputs)), 0.8) is None
    assert distance_verdict(replace(telling, fold=np.zeros_like(telling.fold)), 0.8) is None  # one fold
    few = np.where(telling.unseen, (telling.products.astype(int) % (MIN_HIDDEN_PRODUCTS - 1)).astype(str), "k")
    assert distance_verdict(replace(telling, products=few), 0.8) is None  # 19 never-seen products: too few
    assert distance_verdict(telling, 0.8) is not None
    with pytest.raises(TrainingError, match="not all in"):
        fit_novelty(inputs, answers.unseen, 0.8, use=ALL_INPUTS)


# ---------------------------------------------------------------- the score, the answerer and the version


def distance_model() -> NoveltyModel:
    return NoveltyModel(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 2.0]), -1.0, 0.5, 0.8, inputs=ALL_INPUTS)


def test_a_novelty_record_of_six_inputs_round_trips_and_scores_its_columns() -> None:
    model = distance_model()
    record = json.loads(json.dumps(model.record()))
    assert record["inputs"] == list(ALL_INPUTS)
    again = NoveltyModel.from_record(record)
    assert again.inputs == ALL_INPUTS and again.uses_distance
    x = np.random.default_rng(5).normal(size=(4, len(ALL_INPUTS)))
    np.testing.assert_allclose(again.score(x), sigmoid(2.0 * x[:, -1] - 1.0))
    five = NoveltyModel(np.ones(len(INPUTS)), 0.0, 0.5, 0.8)
    np.testing.assert_allclose(five.score(x), five.score(x[:, : len(INPUTS)]))  # the distance column left out
    with pytest.raises(ValueError, match="5 novelty inputs"):
        again.score(x[:, : len(INPUTS)])
    with pytest.raises(InvalidModel, match="weights"):
        NoveltyModel.from_record({**record, "weights": record["weights"][:-1]})
    with pytest.raises(InvalidModel, match="novelty inputs"):
        NoveltyModel.from_record({**record, "inputs": [*INPUTS, "elsewhere"]})


def six_d_version(tmp_path: Path) -> tuple[ProductHead, np.ndarray, Path]:
    features, labels = two_products(np.random.default_rng(6), photos=12)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    products = ("p0", "p1")
    head = ProductHead(products, ("c", "c"), {None: logistic_classifier(products, np.eye(2, 6) * 8.0, np.zeros(2))})
    names = np.array(products)[labels]
    gallery = build_gallery(
        features, names, [f"{i}.png" for i in range(24)], [f"{i:064x}" for i in range(24)], products
    )
    return head, features, write_with_distance(tmp_path, head, gallery)


def write_with_distance(tmp_path: Path, head: ProductHead, gallery: Gallery) -> Path:
    """A version of `head` (of one category, "c"), `gallery` and a novelty score of the product distance."""
    return write_model(
        tmp_path / "store",
        name="distance",
        head=head,
        catalog={p: {"product": p, "name": p, "category": "c"} for p in head.products},
        backbone={"name": "efficientnet_lite0", "feature_dim": gallery.dim},
        gallery=gallery,
        novelty=distance_model(),
    )


def test_the_answerer_scores_the_distance_of_its_gallery_and_a_version_keeps_it(tmp_path: Path) -> None:
    _, features, version = six_d_version(tmp_path)
    bundle = load_model(version)
    assert bundle.novelty is not None and bundle.novelty.uses_distance and bundle.gallery is not None
    answerer = Answerer(bundle.head, bundle.gallery, bundle.novelty)
    density = bundle.gallery.density
    assert density is not None
    frames = np.concatenate([features[:2], np.array([[0, 0, 0, 0, 0.6, 0.8]], dtype=np.float32)])
    decisions = answerer.answer(frames)
    expected = sigmoid(2.0 * np.clip(density.nearest_distance(frames), -20, 20) - 1.0)
    np.testing.assert_allclose([d.novelty for d in decisions], expected, atol=1e-6)
    assert [d.status for d in decisions] == ["recognized", "recognized", "unknown"]
    on_a_line = answerer.answer(features[:1], allowed=[np.array([False, True])])[0]  # p0's photo, on p1's line
    far_from_p1 = sigmoid(2.0 * density.nearest_distance(features[:1], np.array([[False, True]])) - 1.0)[0]
    assert on_a_line.novelty == pytest.approx(far_from_p1, abs=1e-6) and on_a_line.status == "unknown"


def test_a_distance_score_needs_a_gallery_that_gives_one(tmp_path: Path) -> None:
    products = ("p0", "p1")
    head = ProductHead(products, ("c", "c"), {None: logistic_classifier(products, np.eye(2, 3), np.zeros(2))})
    tiny = build_gallery(np.eye(2, 3, dtype=np.float32), list(products), ["a", "b"], ["1", "2"], products)
    with pytest.raises(ValueError, match="too small to give it"):
        Answerer(head, tiny, distance_model())
    with pytest.raises(ArtifactError, match="too small"):  # the version written is loaded before it is kept
        write_with_distance(tmp_path, head, tiny)
    assert not (tmp_path / "store" / "current").exists()


def test_an_enrolments_check_scores_the_new_photos_distance_with_their_own_mean_left_out() -> None:
    from models.train.quick_enrolment import check_inputs

    rng = np.random.default_rng(7)
    features, labels = two_products(rng, photos=12)
    base = build_gallery(features, np.array(["p0", "p1"])[labels], [""] * 24, [""] * 24, ("p0", "p1"))
    products = ("p0", "p1", "p2")
    head = ProductHead(products, ("c", "c", "c"), {None: logistic_classifier(products, np.eye(3, 6), np.zeros(3))})
    new = np.zeros((6, 6), dtype=np.float32)
    new[:, 0], new[:, 3] = rng.normal(0, 1.0, 6), 2.0
    spread = {product: (0.9, 0.05) for product in products}
    without, _ = check_inputs(head, base, spread, new, "p2")
    assert np.isnan(without[:, -1]).all()
    with_distance, answered = check_inputs(head, base, spread, new, "p2", distance=True)
    np.testing.assert_allclose(with_distance[:, : len(INPUTS)], without[:, : len(INPUTS)])
    assert base.density is not None
    as_stored = new.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(with_distance[:, -1], base.density.nearest_distance_with(as_stored), rtol=1e-6)
    assert np.median(with_distance[:, -1]) < np.median(base.density.nearest_distance(as_stored)) - 3.0
    assert len(answered) == 6
