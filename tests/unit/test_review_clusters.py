"""The review queue grouped by look-alikes: the similarity a version calibrates for "one product", the clusters cut at
it, the photos a labelled cluster enrols, and a worker's features record read back."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from api import review_clusters
from api.review_clusters import GroupingUnavailable, best_guess, clusters, enrol_choice, merged_by_object, object_of
from api.routes.review import photos_to_enrol
from models.answer.review_grouping import FALLBACK_SIMILARITY, group_members, vector_of
from models.answer.same_product import same_product_similarity
from models.store.review_dir import DirectoryReviewStore
from worker.review_sink import FrameFeatures


def normalised(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def families(seed: int = 0, *, families: int = 6, variants: int = 3, photos: int = 8, noise: float = 0.1) -> tuple:
    """Look-alike products: variants of a family share most of their direction."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for family in range(families):
        base = rng.normal(0, 1, 48)
        for variant in range(variants):
            centre = base + rng.normal(0, 0.35, 48)
            for _ in range(photos):
                rows.append(centre + rng.normal(0, noise * np.linalg.norm(centre) / 7, 48))
                labels.append(f"f{family}-v{variant}")
    return normalised(np.array(rows)), np.array(labels)


def test_the_same_product_similarity_separates_a_product_from_its_look_alikes() -> None:
    features, labels = families(photos=6)  # every photo in the sample (SAMPLE_PER_PRODUCT): the claim is exact
    threshold = same_product_similarity(features, labels)
    assert threshold is not None
    similarity = features @ features.T
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1).astype(bool)
    above = similarity[upper] >= threshold
    assert same[upper][above].mean() >= 0.95  # pairs that alike are of one product 95% of the time
    assert (similarity[upper & same] >= threshold).mean() > 0.5  # and most pairs of one product are that alike
    family = np.array([label.split("-")[0] for label in labels])
    siblings = upper & ~same & (family[:, None] == family[None, :])
    assert threshold > np.median(similarity[siblings])  # a look-alike is most often not taken for one product
    assert same_product_similarity(features[:6], labels[:6]) is None  # one product: nothing to tell apart
    assert same_product_similarity(features[::6], labels[::6]) is None  # one photo of each: no pair of one product
    stricter = same_product_similarity(features, labels, precision=0.999)
    assert stricter is not None and stricter >= threshold


def record(
    item: str, vector: np.ndarray | None, *, similarity: float | None = 0.9, space: str = "s", guess: str = "x"
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": item,
        "frame_id": f"frame-{item}",
        "device": "cam",
        "received_at": f"2026-01-01T00:00:{item[-2:]}Z",
        "answer": {"status": "unknown", "top_k": [{"product": guess, "score": 0.5}]},
    }
    if vector is not None:
        found["features"] = FrameFeatures(space, vector, lambda: similarity).record()
    return found


def test_frames_of_one_product_make_one_cluster_and_look_alikes_stay_apart() -> None:
    features, labels = families(1, photos=5)
    threshold = same_product_similarity(features, labels)
    chosen = np.isin(labels, ["f0-v0", "f0-v1", "f3-v2"])  # two siblings and a stranger
    records = [record(f"item-{i:02d}", vector, similarity=threshold) for i, vector in enumerate(features[chosen])]
    truth = labels[chosen]
    found = group_members(records)
    assert sorted(len(group) for group in found) == [5, 5, 5]
    assert all(len(set(truth[group])) == 1 for group in found)


def test_without_features_or_in_another_space_an_item_is_alone() -> None:
    vector = np.ones(16)
    records = [
        record("a-01", vector),
        record("a-02", vector * 1.01),
        record("a-03", None),
        record("a-04", vector, space="another"),
        {**record("a-05", vector), "features": {"space": "s", "dim": 16, "float16": "not base64!"}},
        {
            **record("a-06", vector),
            "features": {"space": "s", "dim": 99, "float16": record("x-06", vector)["features"]["float16"]},
        },
        record("a-07", np.ones(8)),  # a damaged record: another size in the same space
    ]
    assert vector_of(records[4]) is None and vector_of(records[5]) is None
    assert sorted(sorted(group) for group in group_members(records)) == [[0, 1], [2], [3], [4], [5], [6]]
    assert vector_of(record("b-01", vector, similarity=None))[2] is None  # type: ignore[index]
    assert FALLBACK_SIMILARITY == 0.9  # without a calibrated similarity: pairs at 0.93 join, at 0.85 do not
    near, far = np.r_[1.0, 0.4, np.zeros(14)], np.r_[1.0, 0.62, np.zeros(14)]  # cosine to `unit`: 0.928, 0.850
    unit = np.eye(16)[0]
    assert len(group_members([record("c-01", unit, similarity=None), record("c-02", near, similarity=None)])) == 1
    assert len(group_members([record("c-01", unit, similarity=None), record("c-02", far, similarity=None)])) == 2
    bogus = [record("d-01", unit, similarity=-1.5), record("d-02", -unit, similarity=-1.5)]  # would merge anything
    assert vector_of(bogus[0])[2] is None and len(group_members(bogus)) == 2  # type: ignore[index]
    assert vector_of(record("e-01", np.zeros(16))) is None  # nothing to compare: not a cluster's breaker
    huge = {**record("f-01", unit), "features": {"space": "s", "dim": 100_000, "float16": "AAAA"}}
    assert vector_of(huge) is None


def test_a_labelled_cluster_enrols_its_most_typical_frame_then_the_most_unlike() -> None:
    rng = np.random.default_rng(3)
    centre = rng.normal(0, 1, 32)
    poses = [centre + rng.normal(0, 0.2, 32) for _ in range(6)] + [centre + np.eye(32)[0] * 3]  # one far pose
    records = [record(f"item-{i:02d}", pose) for i, pose in enumerate(poses)]
    chosen = enrol_choice(records, count=3)
    rows = normalised(np.array(poses))
    assert chosen[0] == int((rows @ rows.T).mean(axis=1).argmax())  # the most typical first
    assert 6 in chosen[:2]  # the far pose right after: it covers what the others do not
    assert len(set(enrol_choice(records, count=10))) == 7
    newest = enrol_choice([record("item-01", None), record("item-02", poses[0])], count=1)
    assert newest == [1]  # without features for all: the newest
    assert enrol_choice([record("item-01", np.ones(8)), record("item-02", poses[0])], count=1) == [1]  # sizes differ


def test_a_batch_skips_an_item_removed_before_its_photo_was_read(tmp_path: Path) -> None:
    store = DirectoryReviewStore(tmp_path / "review", max_items=100, max_bytes=1 << 20, max_age_s=3600)
    base = np.random.default_rng(0).normal(0, 1, 32)
    ids = []
    for index in range(4):
        features = FrameFeatures("s", base + np.random.default_rng(index).normal(0, 0.1, 32), lambda: 0.9).record()
        added = store.add(
            b"\xff\xd8" + bytes([index]),
            content_type="image/jpeg",
            device="cam",
            frame_id=f"f{index}",
            received_at="",
            answer={},
            features=features,
        )
        ids.append(added.id)
    records = [store.get(item) for item in ids]
    first = records[enrol_choice(records)[0]]["id"]
    shutil.rmtree(tmp_path / "review" / "items" / first)  # a worker evicted it after the API read the records
    skipped: list[dict[str, str]] = []
    left, photos, enrolled = photos_to_enrol(store, records, skipped)
    assert skipped == [{"id": first, "reason": "gone"}] and first not in {r["id"] for r in left}
    assert len(photos) == 3 and enrolled == set(ids) - {first}
    assert store.label_if_open(ids[0] if ids[0] != first else ids[1], "p", enrolled=True) is not None
    labelled = ids[0] if ids[0] != first else ids[1]
    assert store.label_if_open(labelled, "q", enrolled=False) is None  # labelled already: left as it is
    assert store.dismiss_if_open(labelled) is None and store.get(labelled)["label"] == "p"
    assert store.dismiss_if_open(first) is None  # gone


def test_clusters_come_largest_first_with_their_best_guess() -> None:
    a, b = np.eye(8)[0], np.eye(8)[1]
    records = [
        record("i-01", b, guess="q"),
        record("i-02", a, guess="p"),
        record("i-03", a, guess="p"),
        record("i-04", a, guess="r"),
    ]
    found = clusters(records)
    assert [c["size"] for c in found] == [3, 1]
    assert found[0]["id"] == "i-02" and found[0]["items"] == ["i-04", "i-03", "i-02"]
    assert found[0]["best_guess"] == {"product": "p", "frames": 2, "share": 0.6667, "mean_score": 0.5}
    assert (found[0]["first_received_at"], found[0]["last_received_at"]) == (
        "2026-01-01T00:00:02Z",
        "2026-01-01T00:00:04Z",
    )
    assert best_guess([{"answer": {"top_k": []}}]) is None


def test_the_calibration_draws_whole_categories_so_siblings_meet() -> None:
    from models.answer import same_product

    labels = np.repeat([f"p{i:03d}" for i in range(400)], 2)  # 400 products in 40 families of 10
    categories = np.array([f"c{int(label[1:]) // 10}" for label in labels])
    rows = same_product._sample(labels, categories, np.random.default_rng(0))
    products = np.unique(labels[rows])
    assert len(products) == same_product.SAMPLE_PRODUCTS == 200
    drawn = {categories[np.flatnonzero(labels == product)[0]] for product in products}
    assert len(drawn) == 20  # whole families: 20 of 10 products, not 200 products of 40 families


def of_object(found: dict[str, Any], name: str, device: str = "cam") -> dict[str, Any]:
    return {**found, "device": device, "answer": {**found["answer"], "object": name}}


def test_frames_of_one_object_are_one_card_whatever_their_features_say(monkeypatch: Any) -> None:
    unit, other = np.eye(16)[0], np.eye(16)[1]
    records = [
        of_object(record("g-01", unit), "part-7"),
        of_object(record("g-02", other), "part-7"),  # the same part seen from its other side
        of_object(record("g-03", other * 1.01), "part-8"),  # alike g-02 by features: joins its cluster, so part-7's
        of_object(record("g-04", np.eye(16)[2]), "part-7", device="cam-2"),  # another device's part-7 is another part
        record("g-05", None),  # no object, no features: alone
    ]
    assert sorted(sorted(c["items"]) for c in clusters(records)) == [["g-01", "g-02", "g-03"], ["g-04"], ["g-05"]]
    assert merged_by_object(records, [[0], [1], [2], [3], [4]]) == [[0, 1], [2], [3], [4]]
    assert object_of(records[3]) == ("cam-2", "part-7") and object_of(records[4]) is None

    def no_numpy() -> Any:
        raise GroupingUnavailable("numpy and scipy are not installed here")

    monkeypatch.setattr(review_clusters, "grouping", no_numpy)  # the bridge image's API: by object alone
    assert sorted(sorted(c["items"]) for c in clusters(records)) == [["g-01", "g-02"], ["g-03"], ["g-04"], ["g-05"]]
    assert not review_clusters.features_available()
