"""The gallery of enrolled photos, the novelty score, the Answerer that joins them to the head, and how a model
directory stores them (and still loads without them)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.answer.answerer import Answerer
from models.answer.classifiers import sigmoid
from models.answer.gallery import GALLERY_FILE, Gallery, build_gallery, product_spread
from models.answer.head import RECOGNIZED, UNKNOWN, ProductHead, logistic_classifier
from models.answer.novelty import (
    ALL_INPUTS,
    INPUTS,
    MIN_RIGHT,
    NoveltyModel,
    answered_index,
    fit_novelty,
    novelty_inputs,
    threshold_for,
)
from models.answer.sampling import sample_rows
from models.bundle import FEATURES_FILE, load_model, write_model
from models.errors import ArtifactError, InvalidModel, TrainingError
from models.extract.recipe import LEGACY, FeatureRecipe
from models.store.versions import file_sha256


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    result: np.ndarray = v / np.linalg.norm(v)
    return result


def small_gallery() -> Gallery:
    """Three products in 3-d: a has two photos, b one, c three."""
    features = np.stack(
        [unit(1, 0, 0), unit(0.8, 0.6, 0), unit(0, 1, 0), unit(0, 0, 1), unit(0, 0.6, 0.8), unit(0.6, 0, 0.8)]
    )
    labels = np.array([0, 0, 1, 2, 2, 2])
    return Gallery(
        features=features,
        products=("a", "b", "c"),
        labels=labels,
        photos=np.array(["a/0.png", "a/1.png", "b/0.png", "c/0.png", "c/1.png", "c/2.png"]),
        sha256=np.array([f"{i:064x}" for i in range(6)]),
        spread_mean=np.array([0.8, 1.0, 0.7], np.float32),
        spread_std=np.array([0.1, 1.0, 0.05], np.float32),
    )


# ---------------------------------------------------------------- gallery


def test_best_by_product_is_the_nearest_photo_of_each_product() -> None:
    gallery = small_gallery()
    similarities = np.array(
        [
            [0.1, 0.5, 0.9, 0.2, 0.3, 0.25],
            [0.7, -0.2, -0.4, 0.6, 0.95, -0.1],
        ],
        np.float32,
    )
    np.testing.assert_allclose(gallery.best_by_product(similarities), [[0.5, 0.9, 0.3], [0.7, -0.4, 0.95]])
    query = unit(1, 1, 0)[None, :]
    np.testing.assert_allclose(gallery.similarities(query), query @ gallery.features.T, atol=1e-7)
    best = gallery.best_by_product(gallery.similarities(query))
    np.testing.assert_allclose(best, [[0.98994949, 0.70710678, 0.6 * 0.70710678]], atol=1e-6)


def test_matches_are_the_nearest_photos_best_first() -> None:
    gallery = small_gallery()
    similarities = np.array(
        [
            [0.1, 0.5, 0.9, 0.2, 0.3, 0.25],
            [0.7, -0.2, -0.4, 0.6, 0.95, -0.1],
        ],
        np.float32,
    )
    first, second = gallery.matches(similarities, 3)
    assert [(m["product"], m["photo"]) for m in first] == [("b", "b/0.png"), ("a", "a/1.png"), ("c", "c/1.png")]
    assert [m["similarity"] for m in first] == pytest.approx([0.9, 0.5, 0.3], abs=1e-6)
    assert [m["photo"] for m in second] == ["c/1.png", "a/0.png", "c/0.png"]
    assert isinstance(first[0]["similarity"], float)
    (one,) = gallery.matches(similarities[:1], 1)
    assert len(one) == 1 and one[0]["photo"] == "b/0.png"
    everything = gallery.matches(similarities, 50)  # more than the gallery holds: all of it, in order
    assert [m["photo"] for m in everything[1]] == ["c/1.png", "a/0.png", "c/0.png", "c/2.png", "a/1.png", "b/0.png"]
    assert gallery.matches(similarities, 0) == [(), ()]
    assert gallery.matches(similarities, -1) == [(), ()]


def test_matches_on_a_larger_gallery_are_the_sorted_top_k() -> None:
    rng = np.random.default_rng(11)
    features = rng.normal(size=(60, 5)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    names = np.repeat(np.array(["a", "b", "c", "d"]), 15)
    gallery = build_gallery(features, names, [f"photo-{i}" for i in range(60)], ["-"] * 60, ("a", "b", "c", "d"))
    queries = rng.normal(size=(8, 5)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    similarities = gallery.similarities(queries)
    for row, found in zip(similarities, gallery.matches(similarities, 7), strict=True):
        expected = np.argsort(-row)[:7]
        assert [m["photo"] for m in found] == [str(gallery.photos[i]) for i in expected]
        assert [m["similarity"] for m in found] == sorted((m["similarity"] for m in found), reverse=True)


def test_a_gallery_saves_and_loads_without_pickles(tmp_path: Path) -> None:
    gallery = small_gallery()
    path = tmp_path / GALLERY_FILE
    gallery.save(path)
    with np.load(path, allow_pickle=False) as stored:  # plain arrays only
        assert stored["features"].dtype == np.float16
        assert stored["photos"].dtype.kind == "U"
    loaded = Gallery.load(path, gallery.products)
    assert loaded.features.dtype == np.float32 and loaded.products == ("a", "b", "c")
    np.testing.assert_allclose(loaded.features, gallery.features, atol=1e-3)
    np.testing.assert_array_equal(loaded.labels, gallery.labels)
    assert list(loaded.photos) == list(gallery.photos) and list(loaded.sha256) == list(gallery.sha256)
    np.testing.assert_allclose(loaded.spread_mean, gallery.spread_mean)
    np.testing.assert_allclose(loaded.spread_std, gallery.spread_std)
    with pytest.raises(InvalidModel, match="every product"):  # one product more than the file holds
        Gallery.load(path, ("a", "b", "c", "d"))


def test_a_gallery_refuses_rows_out_of_order_and_missing_products() -> None:
    good = small_gallery()
    fields = {name: getattr(good, name) for name, field in good.__dataclass_fields__.items() if field.init}
    with pytest.raises(InvalidModel, match="grouped"):
        Gallery(**{**fields, "labels": np.array([0, 1, 0, 2, 2, 2])})
    with pytest.raises(InvalidModel, match="every product"):
        Gallery(**{**fields, "labels": np.array([0, 0, 0, 2, 2, 2])})
    with pytest.raises(InvalidModel, match="one row per photo"):
        Gallery(**{**fields, "photos": good.photos[:5]})
    with pytest.raises(InvalidModel, match="spread"):
        Gallery(**{**fields, "spread_std": np.ones(2, np.float32)})


def test_product_spread_by_hand() -> None:
    # product 0: three photos; nearest other photo: v0 -> v1 (0.8), v1 -> v0 (0.8), v2 -> v1 (0.6)
    # product 1: one photo (no spread known); product 2: two identical photos (std floored at 0.02)
    features = np.stack([unit(1, 0), unit(0.8, 0.6), unit(0, 1), unit(1, 1), unit(-1, 0), unit(-1, 0)])
    labels = np.array([0, 0, 0, 1, 2, 2])
    mean, std = product_spread(features, labels, 3)
    nearest = np.array([0.8, 0.8, 0.6])
    np.testing.assert_allclose(mean, [nearest.mean(), 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(std, [nearest.std(), 1.0, 0.02], atol=1e-6)
    assert std[0] == pytest.approx(0.0942809, abs=1e-6)


def test_build_gallery_caps_each_product_keeps_every_product_and_groups_rows() -> None:
    rng = np.random.default_rng(3)
    counts = {"valve": 7, "pump": 2, "hose": 5}
    names = np.array([name for name, count in counts.items() for _ in range(count)])
    order = rng.permutation(len(names))  # photos arrive interleaved
    names = names[order]
    features = rng.normal(size=(len(names), 8)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    photos = [f"{name}/{i}.png" for i, name in enumerate(names)]
    digests = [f"sha-{i}" for i in range(len(names))]
    products = ("pump", "valve", "hose")  # the head's order, not the photos'
    gallery = build_gallery(features, names, photos, digests, products, max_per_product=3, seed=0)
    assert gallery.products == products
    assert np.bincount(gallery.labels).tolist() == [2, 3, 3]  # pump has only 2; valve and hose capped at 3
    assert np.all(np.diff(gallery.labels) >= 0)
    for label, photo, digest, vector in zip(
        gallery.labels, gallery.photos, gallery.sha256, gallery.features, strict=True
    ):
        index = photos.index(str(photo))
        assert names[index] == products[label] and digests[index] == digest
        np.testing.assert_allclose(vector, features[index], atol=1e-3)  # stored as float16
    assert len(set(gallery.photos.tolist())) == 8  # no photo twice
    mean, std = product_spread(gallery.features, gallery.labels, 3)
    np.testing.assert_allclose(gallery.spread_mean, mean)
    np.testing.assert_allclose(gallery.spread_std, std)
    again = build_gallery(features, names, photos, digests, products, max_per_product=3, seed=0)
    assert again.photos.tolist() == gallery.photos.tolist()  # seeded
    uncapped = build_gallery(features, names, photos, digests, products)
    assert len(uncapped.features) == len(names)
    sample = sample_rows(1000, 10, seed=7)
    assert len(set(sample.tolist())) == 10 and np.all(np.diff(sample) > 0) and sample[0] >= 0 and sample[-1] < 1000
    assert sample.tolist() == sample_rows(1000, 10, seed=7).tolist() != sample_rows(1000, 10, seed=8).tolist()
    assert sample[-1] > 100  # a sample across the rows, not the first ones
    assert sample_rows(5, 10).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="no photo of 'gasket'"):
        build_gallery(features, names, photos, digests, (*products, "gasket"))


# ---------------------------------------------------------------- novelty


def test_answered_index_is_the_best_product_of_the_best_category() -> None:
    categories = ("A", "A", "B")
    probabilities = np.array(
        [
            [0.35, 0.25, 0.40],  # global argmax is the B product; category A holds 0.6: its best, product 0
            [0.10, 0.20, 0.70],
            [0.20, 0.45, 0.35],
        ]
    )
    assert answered_index(probabilities, categories).tolist() == [0, 2, 1]
    # categories need not be in sorted order, nor their products side by side
    assert answered_index(np.array([[0.32, 0.40, 0.28]]), ("tops", "bags", "tops")).tolist() == [0]


def test_answered_index_agrees_with_the_heads_decision() -> None:
    products = ("p0", "p1", "p2", "p3", "p4")
    categories = ("z", "a", "z", "m", "a")
    head = ProductHead(
        products, categories, {None: logistic_classifier(products, np.eye(5, 3), np.zeros(5))}, product_threshold=0
    )
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(5), size=200)
    answered = answered_index(probabilities, categories)
    assert [products[i] for i in answered] == [head.decide(row).product for row in probabilities]


def test_novelty_inputs_by_hand() -> None:
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    best_similarity = np.array([[0.9, 0.95, 0.1], [0.4, 0.3, 0.35]])
    answered = np.array([0, 2])
    spread_mean = np.array([0.8, 0.7, 0.5])
    spread_std = np.array([0.05, 0.1, 0.01])
    inputs = novelty_inputs(probabilities, best_similarity, answered, spread_mean, spread_std, np.array([0.5, 30.0]))
    assert inputs.shape == (2, len(ALL_INPUTS))
    expected = [
        # confidence, margin (best - runner-up), similarity, z = (0.9 - 0.8) / 0.05, nearest product (1) != 0,
        # the product distance as given
        [0.6, 0.3, 0.9, 2.0, 0.0, 0.5],
        # z = (0.35 - 0.5) / 0.01 = -15, clipped to -10; the gallery's nearest (0) is not the answer (2); the
        # distance clipped to 20
        [0.3, 0.2, 0.35, -10.0, 0.0, 20.0],
    ]
    np.testing.assert_allclose(inputs, expected, atol=1e-9)
    without = novelty_inputs(probabilities, best_similarity, answered, spread_mean, spread_std)
    assert np.isnan(without[:, -1]).all()  # no density: the column a score of INPUTS alone never reads
    np.testing.assert_allclose(without[:, : len(INPUTS)], inputs[:, : len(INPUTS)])
    agreeing = novelty_inputs(probabilities, best_similarity, np.array([1, 0]), spread_mean, spread_std)
    np.testing.assert_allclose(agreeing[:, 4], [1.0, 1.0])
    np.testing.assert_allclose(agreeing[:, 0], [0.3, 0.2])


def test_threshold_for_refuses_at_least_the_share() -> None:
    scores = np.array([0.7, 0.1, 0.9, 0.8])
    assert threshold_for(scores, 0.5) == 0.8
    assert threshold_for(scores, 0.6) == 0.7
    assert threshold_for(scores, 0.75) == 0.7
    assert threshold_for(scores, 1.0) == 0.1
    assert threshold_for(scores, 0.01) == 0.9
    assert threshold_for(np.array([]), 0.8) == 1.0
    for share in (0.1, 0.3, 0.5, 0.62, 0.8, 0.99):
        refused = scores >= threshold_for(scores, share)
        assert refused.mean() >= share


def synthetic_inputs(rng: np.random.Generator, known: int, unseen: int) -> tuple[np.ndarray, np.ndarray]:
    """Known frames: confident, near their product's photos; never-seen: unsure, far from every photo."""

    def frames(n: int, confidence: float, similarity: float, z: float, agrees: float) -> np.ndarray:
        conf = np.clip(rng.normal(confidence, 0.12, n), 0.05, 1.0)
        return np.stack(
            [
                conf,
                np.clip(conf - rng.uniform(0, 0.3, n), 0, 1),
                np.clip(rng.normal(similarity, 0.08, n), -1, 1),
                rng.normal(z, 1.0, n),
                (rng.random(n) < agrees).astype(float),
            ],
            axis=1,
        )

    inputs = np.concatenate([frames(known, 0.85, 0.85, 0.0, 0.95), frames(unseen, 0.45, 0.55, -3.0, 0.3)])
    return inputs, np.arange(known + unseen) >= known


def test_fit_novelty_separates_never_seen_frames_and_refuses_the_share_asked() -> None:
    rng = np.random.default_rng(1)
    inputs, unseen = synthetic_inputs(rng, 300, 100)
    model = fit_novelty(inputs, unseen, refuse_unseen=0.8)
    scores = model.score(inputs)
    assert np.all((scores >= 0) & (scores <= 1))
    refused = scores >= model.threshold
    assert refused[unseen].mean() >= 0.8
    assert refused[~unseen].mean() < 0.1  # well separated: few known frames are refused
    assert np.median(scores[unseen]) > 0.5 > np.median(scores[~unseen])
    assert model.weights[2] < 0 and model.refuse_unseen == 0.8  # nearer the photos: less novel
    # a new sample from the same frames: the same operating point, roughly
    fresh, fresh_unseen = synthetic_inputs(np.random.default_rng(2), 300, 100)
    assert (model.score(fresh[fresh_unseen]) >= model.threshold).mean() > 0.7
    strict = fit_novelty(inputs, unseen, refuse_unseen=1.0)
    assert strict.threshold <= model.threshold and (strict.score(inputs[unseen]) >= strict.threshold).all()
    with pytest.raises(TrainingError, match="both"):
        fit_novelty(inputs, np.zeros(len(inputs), bool))
    with pytest.raises(TrainingError, match=r"\(0, 1\]"):
        fit_novelty(inputs, unseen, refuse_unseen=0.0)


def test_fit_novelty_fitted_on_wrong_answers_too_lets_fewer_of_them_through_at_the_same_promise() -> None:
    rng = np.random.default_rng(0)
    inputs, unseen = synthetic_inputs(rng, 300, 100)
    wrong = np.flatnonzero(~unseen)[:60]  # known frames the head answers as another product: less sure, and the
    inputs[wrong, 0] = np.clip(rng.normal(0.6, 0.12, len(wrong)), 0.05, 1.0)  # gallery's nearest product disagrees
    inputs[wrong, 1] = np.clip(inputs[wrong, 0] - rng.uniform(0, 0.3, len(wrong)), 0, 1)
    inputs[wrong, 4] = 0.0
    answered_right = ~unseen
    answered_right[wrong] = False

    def let_through(model: NoveltyModel) -> tuple[float, float, float]:
        refused = model.score(inputs) >= model.threshold
        return refused[unseen].mean(), (~refused[wrong]).mean(), refused[answered_right].mean()

    unseen_only = fit_novelty(inputs, unseen, 0.8)
    with_wrong = fit_novelty(inputs, unseen, 0.8, answered_right=answered_right)
    (unseen_a, wrong_a, right_a), (unseen_b, wrong_b, right_b) = let_through(unseen_only), let_through(with_wrong)
    assert unseen_a >= 0.8 and unseen_b >= 0.8  # the threshold keeps its promise on never-seen frames
    assert wrong_a >= 0.95  # fitted on never-seen frames alone, nearly every wrong answer went through
    assert wrong_b <= wrong_a - 0.2
    assert right_a <= 0.05 and right_b <= 0.05
    # fewer than MIN_RIGHT known frames answered right, or fewer right than wrong (a head that answers most known
    # frames wrong: the score would learn sure against unsure): never-seen frames alone
    few_right = np.zeros(len(inputs), bool)
    few_right[np.flatnonzero(answered_right)[: MIN_RIGHT - 1]] = True

    def known_right(count: int) -> np.ndarray:  # the first `count` of the right answers kept right, the rest wrong
        right = answered_right.copy()
        right[np.flatnonzero(answered_right)[count:]] = False
        return right

    assert (~known_right(149) & ~unseen).sum() == 151  # 149 right, 151 wrong: never-seen frames alone
    assert not np.allclose(
        fit_novelty(inputs, unseen, 0.8, answered_right=known_right(150)).weights, unseen_only.weights
    )
    for right in (np.zeros(len(inputs), bool), few_right, known_right(149)):
        fitted = fit_novelty(inputs, unseen, 0.8, answered_right=right)
        np.testing.assert_allclose(fitted.weights, unseen_only.weights)
    with pytest.raises(TrainingError, match="shape"):
        fit_novelty(inputs, unseen, 0.8, answered_right=answered_right[:-1])


def test_fit_novelty_needs_min_right_answers_even_where_they_outnumber_the_wrong_ones() -> None:
    inputs, unseen = synthetic_inputs(np.random.default_rng(1), 7, 40)
    known = np.flatnonzero(~unseen)
    alone = fit_novelty(inputs, unseen, 0.8).weights

    def fitted_with(right_count: int) -> np.ndarray:
        right = np.zeros(len(inputs), bool)
        right[known[:right_count]] = True
        return fit_novelty(inputs, unseen, 0.8, answered_right=right).weights

    np.testing.assert_allclose(fitted_with(MIN_RIGHT - 1), alone)  # 4 right, 3 wrong: too few right to fit
    assert not np.allclose(fitted_with(MIN_RIGHT), alone)  # 5 right, 2 wrong: the wrong ones fitted too


def test_a_novelty_record_round_trips_and_wrong_inputs_are_refused() -> None:
    model = NoveltyModel(np.array([-1.5, -0.5, -8.0, -0.3, -1.0]), 6.25, 0.61, 0.8)
    record = json.loads(json.dumps(model.record()))
    assert record["inputs"] == list(INPUTS)
    again = NoveltyModel.from_record(record)
    np.testing.assert_array_equal(again.weights, model.weights)
    assert (again.bias, again.threshold, again.refuse_unseen) == (6.25, 0.61, 0.8)
    x = np.array([[0.9, 0.5, 0.95, 1.0, 1.0], [0.3, 0.05, 0.4, -4.0, 0.0]])
    np.testing.assert_allclose(again.score(x), sigmoid(x @ model.weights + 6.25))
    with pytest.raises(InvalidModel, match="novelty inputs"):
        NoveltyModel.from_record({**record, "inputs": list(reversed(INPUTS))})
    with pytest.raises(InvalidModel, match="novelty inputs"):
        NoveltyModel.from_record({**record, "inputs": list(INPUTS[:-1])})
    with pytest.raises(InvalidModel, match="weights"):
        NoveltyModel.from_record({**record, "weights": record["weights"][:-1]})
    with pytest.raises(InvalidModel, match="weights"):
        NoveltyModel.from_record({**record, "weights": [float("nan")] * len(INPUTS)})


# ---------------------------------------------------------------- the Answerer


def four_d_head() -> ProductHead:
    products = ("p0", "p1", "p2")
    coef = 8.0 * np.eye(3, 4, dtype=np.float32)  # product i: feature axis i; axis 3 belongs to none
    return ProductHead(
        products,
        ("c1", "c1", "c2"),
        {None: logistic_classifier(products, coef, np.zeros(3, np.float32))},
        product_threshold=0.0,  # the head alone answers every frame: only novelty can refuse one
        category_threshold=0.5,
    )


def four_d_gallery(products: tuple[str, ...] = ("p0", "p1", "p2")) -> Gallery:
    features = np.stack([unit(1, 0, 0, 0), unit(1, 0, 0, 0.1), unit(0, 1, 0, 0), unit(0, 0, 1, 0)])
    return build_gallery(
        features,
        ["p0", "p0", "p1", "p2"],
        ["c1/p0/0.png", "c1/p0/1.png", "c1/p1/0.png", "c2/p2/0.png"],
        ["s0", "s1", "s2", "s3"],
        products,
    )


# novelty = sigmoid(5 - 10 * similarity to the answered product's nearest photo)
SIMILARITY_ONLY = NoveltyModel(np.array([0.0, 0.0, -10.0, 0.0, 0.0]), 5.0, 0.5, 0.8)


def test_answerer_recognises_a_frame_near_a_photo_and_names_it() -> None:
    answerer = Answerer(four_d_head(), four_d_gallery(), SIMILARITY_ONLY)
    near = unit(0.05, 1, 0, 0.02)[None, :]
    (decision,) = answerer.answer(near, matches=2)
    assert (decision.status, decision.product, decision.category) == (RECOGNIZED, "p1", "c1")
    similarity = float(near[0] @ unit(0, 1, 0, 0))
    assert decision.novelty is not None and decision.novelty < 0.01
    assert decision.novelty == pytest.approx(float(sigmoid(np.array(5 - 10 * similarity))), abs=1e-4)
    assert len(decision.matches) == 2
    assert decision.matches[0] == {"product": "p1", "photo": "c1/p1/0.png", "similarity": pytest.approx(similarity)}
    assert decision.matches[1]["product"] == "p0"  # the runner-up photo


def test_answerer_calls_a_frame_far_from_every_photo_unknown() -> None:
    answerer = Answerer(four_d_head(), four_d_gallery(), SIMILARITY_ONLY)
    far = unit(0, 0, 0, 1)[None, :]  # the head spreads it evenly; c1 holds 2/3 and p0 answers for it
    assert answerer.head.decide(answerer.head.probabilities(far)[0]).status == RECOGNIZED  # head alone: recognised
    (decision,) = answerer.answer(far)
    assert decision.status == UNKNOWN and decision.product is None
    nearest_p0 = float(unit(1, 0, 0, 0.1) @ far[0])  # 0.0995: p0's second photo
    assert decision.novelty is not None and decision.novelty >= SIMILARITY_ONLY.threshold
    assert decision.novelty == pytest.approx(float(sigmoid(np.array(5 - 10 * nearest_p0))), abs=1e-4)
    assert decision.category == "c1"  # the category is sure enough (2/3 >= 0.5)
    assert len(decision.matches) == 3 and decision.matches[0]["photo"] == "c1/p0/1.png"  # the others tie at 0
    both = answerer.answer(np.concatenate([unit(0, 0, 1, 0.1)[None, :], far]), matches=0)
    assert [d.status for d in both] == [RECOGNIZED, UNKNOWN] and both[0].product == "p2"
    assert both[0].matches == () == both[1].matches
    nearest_rows, _ = answerer.gallery.nearest(far, 1)  # type: ignore[union-attr]
    novelty = answerer.novelty_of(far, answerer.head.probabilities(far), nearest_rows)
    assert novelty is not None and novelty[0] == pytest.approx(decision.novelty, abs=1e-6)


def test_answerer_without_a_gallery_answers_as_before() -> None:
    head = four_d_head()
    frames = np.stack([unit(0, 0, 0, 1), unit(1, 0.1, 0, 0)])
    decisions = Answerer(head).answer(frames)
    assert [d.novelty for d in decisions] == [None, None] and [d.matches for d in decisions] == [(), ()]
    assert decisions == [head.decide(row) for row in head.probabilities(frames)]
    assert decisions[0].status == RECOGNIZED  # no novelty score: the far frame is answered
    # a gallery without a novelty score: matches, but no novelty
    (with_gallery,) = Answerer(head, four_d_gallery()).answer(frames[1:])
    assert with_gallery.novelty is None and with_gallery.matches[0]["product"] == "p0"


def test_answerer_refuses_a_gallery_that_does_not_fit_its_head() -> None:
    head = four_d_head()
    with pytest.raises(ValueError, match="products"):
        Answerer(head, four_d_gallery(("p0", "p2", "p1")))
    with pytest.raises(ValueError, match="without its gallery"):
        Answerer(head, None, SIMILARITY_ONLY)
    three_d = build_gallery(
        np.eye(3, dtype=np.float32), ["p0", "p1", "p2"], ["a", "b", "c"], ["1", "2", "3"], head.products
    )
    with pytest.raises(ValueError, match="3-d features"):
        Answerer(head, three_d)


# ---------------------------------------------------------------- model directories


def forty_d_model(tmp_path: Path) -> tuple[Path, ProductHead, np.ndarray, Gallery, NoveltyModel, FeatureRecipe]:
    """A version with a non-legacy recipe (b4: 40-d), its mean, a gallery and a novelty score."""
    rng = np.random.default_rng(5)
    products = ("gear", "nut", "bolt")
    head = ProductHead(
        products,
        ("metal", "metal", "fixings"),
        {None: logistic_classifier(products, rng.normal(size=(3, 40)), rng.normal(size=3))},
    )
    recipe = FeatureRecipe(parts=("b4",), power=True, center=True)
    assert recipe.dim == 40
    center = rng.normal(0, 0.1, 40).astype(np.float32)
    features = rng.normal(size=(9, 40)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    gallery = build_gallery(
        features,
        ["gear", "nut", "bolt"] * 3,
        [f"photo-{i}.png" for i in range(9)],
        [f"{i:064x}" for i in range(9)],
        products,
    )
    novelty = NoveltyModel(np.array([-1.0, -0.5, -6.0, -0.2, -0.7]), 4.0, 0.42, 0.85)
    catalog = {
        p: {"product": p, "name": p.title(), "category": c} for p, c in zip(products, head.categories, strict=True)
    }
    version = write_model(
        tmp_path / "store",
        name="forty",
        head=head,
        catalog=catalog,
        backbone={"name": "efficientnet_lite0", "feature_dim": 40},
        recipe=recipe,
        center=center,
        gallery=gallery,
        novelty=novelty,
    )
    return version, head, center, gallery, novelty, recipe


def test_a_model_directory_keeps_its_recipe_mean_gallery_and_novelty(tmp_path: Path) -> None:
    version, head, center, gallery, novelty, recipe = forty_d_model(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    assert {FEATURES_FILE, *gallery_files(manifest)} <= set(manifest["files"])
    assert manifest["gallery"]["photos"] == manifest["gallery"]["stored_rows"] == 9
    assert len(manifest["gallery"]["shards"]) == 1 and manifest["gallery"]["mask"] is None
    bundle = load_model(tmp_path / "store")
    assert bundle.recipe == recipe and bundle.recipe != LEGACY
    assert bundle.center is not None
    np.testing.assert_allclose(bundle.center, center, atol=1e-7)
    assert bundle.gallery is not None and bundle.gallery.products == head.products
    assert bundle.gallery.photos.tolist() == gallery.photos.tolist()
    assert bundle.gallery.sha256.tolist() == gallery.sha256.tolist()
    np.testing.assert_allclose(bundle.gallery.features, gallery.features, atol=1e-3)
    assert bundle.novelty is not None and bundle.novelty.threshold == 0.42 and bundle.novelty.refuse_unseen == 0.85
    np.testing.assert_allclose(bundle.novelty.weights, novelty.weights)
    frames = gallery.features[:2]
    restored = Answerer(bundle.head, bundle.gallery, bundle.novelty).answer(frames)
    assert restored == Answerer(head, gallery, novelty).answer(frames)


def gallery_files(manifest: dict[str, Any]) -> list[str]:
    record = manifest["gallery"]
    return [*record["shards"], *record["spread"]["shards"], *([record["mask"]] if record["mask"] else [])]


def test_a_tampered_gallery_is_refused(tmp_path: Path) -> None:
    version, *_ = forty_d_model(tmp_path)
    shard = gallery_files(json.loads((version / "manifest.json").read_text()))[0]
    data = bytearray((version / shard).read_bytes())
    data[len(data) // 2] ^= 0x01
    (version / shard).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{re.escape(shard)} has sha256"):
        load_model(version)


def test_a_gallery_stored_as_one_file_before_shards_still_loads(tmp_path: Path) -> None:
    version, _, _, gallery, *_ = forty_d_model(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    for name in gallery_files(manifest):
        del manifest["files"][name]
        (version / name).unlink()
    gallery.save(version / GALLERY_FILE)
    manifest["files"][GALLERY_FILE] = {"sha256": file_sha256(version / GALLERY_FILE), "bytes": 1}
    manifest["gallery"] = {"file": GALLERY_FILE, "photos": 9}
    (version / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_model(version).gallery
    assert loaded is not None and loaded.photos.tolist() == gallery.photos.tolist()
    np.testing.assert_allclose(loaded.spread_mean, gallery.spread_mean)


def test_a_novelty_score_without_its_gallery_is_refused(tmp_path: Path) -> None:
    version, *_ = forty_d_model(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    for name in gallery_files(manifest):
        del manifest["files"][name]
        (version / name).unlink()
    del manifest["gallery"]
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="without its gallery"):
        load_model(version)


def test_a_directory_written_before_recipes_and_galleries_loads_as_legacy(tmp_path: Path) -> None:
    version, head, *_ = forty_d_model(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    for name in (FEATURES_FILE, *gallery_files(manifest)):
        del manifest["files"][name]
        (version / name).unlink()
    for key in ("features", "gallery", "novelty"):
        del manifest[key]
    (version / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_model(version)
    assert bundle.recipe == LEGACY and bundle.center is None
    assert bundle.gallery is None and bundle.novelty is None
    assert bundle.head.products == head.products
    frames = np.random.default_rng(0).normal(size=(2, 40))
    decisions = Answerer(bundle.head, bundle.gallery, bundle.novelty).answer(frames)
    assert all(d.novelty is None and d.matches == () for d in decisions)
    # a recipe that centres, with its mean's file gone, is refused
    version2, *_ = forty_d_model(tmp_path / "again")
    manifest2 = json.loads((version2 / "manifest.json").read_text())
    manifest2["features"]["file"] = None
    del manifest2["files"][FEATURES_FILE]
    (version2 / FEATURES_FILE).unlink()
    (version2 / "manifest.json").write_text(json.dumps(manifest2))
    with pytest.raises(ArtifactError, match="mean is missing"):
        load_model(version2)
