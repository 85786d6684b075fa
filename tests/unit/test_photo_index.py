"""The gallery's photo index (models.answer.photo_index, hnswlib): its nearest photos are the exact scan's, the
rows an enrolment adds after it was built are found, rows no longer in use never are, and a version stores it
(hashed, verified, linked by the versions that grow from it) past the threshold only."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.answer import gallery_rows as gallery_rows_module
from models.answer.answerer import Answerer
from models.answer.classifiers import Classifier
from models.answer.gallery import Gallery, build_gallery, top_rows
from models.answer.gallery_rows import GalleryRows, StoredIndex, read_gallery, rows_of, stored_spreads, write_gallery
from models.answer.head import CATEGORY_FIRST, ProductHead, logistic_classifier
from models.answer.novelty import NoveltyModel
from models.answer.photo_index import GraphSearch, PhotoIndex, build_index, row_keys
from models.bundle import load_model, stored_gallery, write_model
from models.errors import ArtifactError

DIM = 48


def unit_rows(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return result


def parts(products: int = 60, per_product: int = 8, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Photos of products in families of six look-alikes: (features, product of each row, product centres)."""
    rng = np.random.default_rng(seed)
    families = rng.normal(size=(products // 6, DIM))
    centres = families[np.arange(products) % len(families)] + 0.5 * rng.normal(size=(products, DIM))
    labels = np.repeat(np.arange(products), per_product)
    features = unit_rows(centres[labels] + 0.6 * rng.normal(size=(len(labels), DIM)))
    return features, [f"part-{i:03d}" for i in labels], centres


def gallery_of(features: np.ndarray, names: list[str]) -> Gallery:
    products = sorted(set(names))
    return build_gallery(
        features,
        names,
        [f"{n}/{i}.png" for i, n in enumerate(names)],
        [f"{i:064x}" for i in range(len(names))],
        products,
    )


def frames(centres: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(centres), count)
    return unit_rows(centres[picks] + 0.6 * rng.normal(size=(count, DIM)))


def keys_of(gallery: Gallery) -> np.ndarray:
    return row_keys(gallery.sha256, np.asarray(gallery.products)[gallery.labels])


def test_row_keys_follow_the_photo_and_its_product_not_the_row() -> None:
    keys = row_keys(["a" * 64, "a" * 64, "b" * 64], ["gear", "nut", "gear"])
    assert len(set(keys.tolist())) == 3 and keys.dtype == np.uint64 and (keys < 2**63).all()
    assert row_keys(["b" * 64], ["gear"])[0] == keys[2]
    # the key a stored graph holds: the first 63 bits of sha256("<photo sha256>\0<product>"), remembered or not
    expected = int.from_bytes(hashlib.sha256(("b" * 64 + "\0gear").encode()).digest()[:8], "big") >> 1
    assert int(row_keys(np.array(["b" * 64]), np.array(["gear"]))[0]) == expected
    with pytest.raises(ValueError, match="sha256"):
        row_keys(["a" * 64, "b" * 64], ["gear"])


def test_row_keys_of_a_table_past_what_is_remembered_are_hashed_without_the_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models.answer import photo_index

    digests, products = [c * 64 for c in "abc"], ["gear", "nut", "ring"]
    expected = row_keys(digests, products)
    photo_index._row_key.cache_clear()
    monkeypatch.setattr(photo_index, "KEYS_REMEMBERED", 2)  # a table of 3 rows: each would push out the next
    np.testing.assert_array_equal(row_keys(digests, products), expected)
    assert photo_index._row_key.cache_info().currsize == 0


def test_the_graphs_nearest_photos_are_the_exact_scans() -> None:
    features, names, centres = parts()
    gallery = gallery_of(features, names)
    search = GraphSearch(build_index(gallery.features, keys_of(gallery)), keys_of(gallery), gallery.features)
    queries = frames(centres, 50)
    rows, similarities = search.nearest(queries, 3)
    exact_rows, exact_similarities = top_rows(gallery.similarities(queries), 3)
    recall = np.mean([len(set(a) & set(b)) / 3 for a, b in zip(rows.tolist(), exact_rows.tolist(), strict=True)])
    assert recall >= 0.99
    np.testing.assert_allclose(similarities, exact_similarities, atol=1e-5)  # ranked by the exact similarity
    assert (np.diff(similarities, axis=1) <= 0).all()


def test_rows_added_after_the_graph_are_found_and_rows_no_longer_used_never_are() -> None:
    features, names, _ = parts()
    gallery = gallery_of(features, names)
    keys = keys_of(gallery)
    newest = gallery.labels == gallery.labels.max()  # an enrolment's photos, after the graph was built
    gone = row_keys(["f" * 64], ["part-000"])  # a photo the graph holds that this gallery no longer uses
    index = build_index(np.vstack([gallery.features[~newest], features[:1]]), np.concatenate([keys[~newest], gone]))
    search = GraphSearch(index, keys, gallery.features)
    assert set(search.loose.tolist()) == set(np.flatnonzero(newest).tolist())
    assert index.deleted == {int(gone[0])}
    rows, similarities = search.nearest(gallery.features[newest], 1)
    assert rows[:, 0].tolist() == np.flatnonzero(newest).tolist()  # each new photo is its own nearest
    np.testing.assert_allclose(similarities[:, 0], 1.0, atol=1e-3)  # float16 rows, as stored
    old = search.nearest(features[:1], 5)[0]
    assert 0 in old[0].tolist()  # the gallery's own row of that photo; the graph's deleted copy has no row


def test_a_search_asked_for_more_than_there_is_pads_with_nothing() -> None:
    features, names, _ = parts(products=6, per_product=2)
    gallery = gallery_of(features, names)
    search = GraphSearch(build_index(gallery.features, keys_of(gallery)), keys_of(gallery), gallery.features)
    rows, similarities = search.nearest(features[:2], 20)
    assert rows.shape == (2, 12) and sorted(rows[0].tolist()) == list(range(12))
    assert np.isfinite(similarities).all()


def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery_rows_module, "INDEX_MIN_PHOTOS", 100)


def indexed_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Gallery, np.ndarray]:
    """A store whose version has a photo index (the threshold lowered): the version, its gallery, the centres."""
    small_threshold(monkeypatch)
    features, names, centres = parts()
    gallery = gallery_of(features, names)
    version = written(tmp_path / "store", head_for(gallery), rows_of(gallery).with_index())
    return version, gallery, centres


def head_for(gallery: Gallery) -> ProductHead:
    """A category-first head of nearest-centre nodes over the gallery's products (families of six)."""
    products = gallery.products
    family = [f"family-{int(p.split('-')[1]) % 10}" for p in products]
    centres = unit_rows(np.stack([gallery.features[gallery.labels == i].mean(axis=0) for i in range(len(products))]))
    names = sorted(set(family))
    family_centres = unit_rows(np.stack([centres[[f == n for f in family]].mean(axis=0) for n in names]))
    classifiers: dict[str | None, Classifier] = {
        None: logistic_classifier(names, 20 * family_centres, np.zeros(len(names)))
    }
    for name in names:
        members = [i for i, f in enumerate(family) if f == name]
        classifiers[name] = logistic_classifier([products[i] for i in members], 20 * centres[members], np.zeros(6))
    return ProductHead(tuple(products), tuple(family), classifiers, structure=CATEGORY_FIRST)


def written(store: Path, head: ProductHead, gallery: Gallery | GalleryRows) -> Path:
    catalog = {p: {"product": p, "name": p, "category": c} for p, c in zip(head.products, head.categories, strict=True)}
    novelty = NoveltyModel(np.array([-3.0, -2.0, -6.0, -0.5, -1.0]), 6.0, 0.5, 0.8)
    return write_model(
        store,
        name="parts",
        head=head,
        catalog=catalog,
        backbone={"name": "efficientnet_lite0", "feature_dim": DIM},
        gallery=gallery,
        novelty=novelty,
    )


def test_a_version_past_the_threshold_stores_its_index_and_answers_as_the_exact_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_threshold(monkeypatch)
    features, names, centres = parts()
    gallery = gallery_of(features, names)
    head = head_for(gallery)
    version = written(tmp_path / "store", head, rows_of(gallery).with_index())
    manifest = json.loads((version / "manifest.json").read_text())
    record = manifest["gallery"]["index"]
    assert set(record.values()) <= set(manifest["files"])  # hashed like every file
    bundle = load_model(tmp_path / "store")
    assert bundle.gallery is not None and isinstance(bundle.gallery.search, GraphSearch)
    queries = frames(centres, 40)
    indexed = Answerer(bundle.head, bundle.gallery, bundle.novelty).answer(queries)
    exact = Answerer(bundle.head, replace(bundle.gallery, search=None), bundle.novelty).answer(queries)
    assert [d.product for d in indexed] == [d.product for d in exact]
    assert [d.novelty for d in indexed] == pytest.approx([d.novelty for d in exact], abs=1e-6)
    photos = [[[m["photo"] for m in d.matches] for d in decisions] for decisions in (indexed, exact)]
    assert sum(a == b for a, b in zip(*photos, strict=True)) >= 39
    similarities = [[m["similarity"] for d in decisions for m in d.matches] for decisions in (indexed, exact)]
    assert similarities[0] == pytest.approx(similarities[1], abs=1e-5)


def test_a_gallery_below_the_threshold_has_no_index(tmp_path: Path) -> None:
    features, names, _ = parts()
    gallery = gallery_of(features, names)
    version = written(tmp_path / "store", head_for(gallery), rows_of(gallery).with_index())
    assert "index" not in json.loads((version / "manifest.json").read_text())["gallery"]
    loaded = load_model(tmp_path / "store").gallery
    assert loaded is not None and loaded.search is None


def test_an_enrolment_carries_the_index_and_a_consolidation_extends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, gallery, _ = indexed_store(tmp_path, monkeypatch)
    stored = stored_gallery(load_model(tmp_path / "store"))
    assert stored is not None and isinstance(stored.index, StoredIndex)
    new_photos = unit_rows(np.random.default_rng(9).normal(size=(4, DIM)))
    grown = stored.with_photos(
        new_photos, "part-new", [f"new/{i}.png" for i in range(4)], ["e" * 63 + str(i) for i in range(4)], 500, 0
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    record = write_gallery(staging, grown, "spreads")  # the spreads' record: the bundle's (not read back here)
    assert record["index"] == stored.index.record()  # carried: the same files, linked
    assert (staging / stored.index.graph).stat().st_ino == (stored.source / stored.index.graph).stat().st_ino  # type: ignore[operator]
    products = [*gallery.products, "part-new"]
    carried = read_gallery(record, lambda name: staging / name, products, staging, stored_spreads(grown))
    served = carried.gallery([*gallery.products, "part-new"])
    assert isinstance(served.search, GraphSearch) and len(served.search.loose) == 4
    rows, _ = served.search.nearest(new_photos, 1)
    assert [served.products[served.labels[r]] for r in rows[:, 0]] == ["part-new"] * 4
    extended = carried.with_index()
    assert isinstance(extended.index, PhotoIndex) and extended.index.size == len(gallery.features) + 4
    assert extended.with_index().index is extended.index  # it holds every row: nothing to add
    again = tmp_path / "again"
    again.mkdir()
    new_record = write_gallery(again, extended, "spreads")
    assert new_record["index"]["graph"] != stored.index.graph
    reread = read_gallery(new_record, lambda name: again / name, products, again, stored_spreads(extended))
    search = reread.gallery([*gallery.products, "part-new"]).search
    assert isinstance(search, GraphSearch) and len(search.loose) == 0


def test_a_scope_shares_a_graph_between_searches_that_leave_its_marks_and_loads_it_anew_for_one_that_would_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enrolment of a new product writes a version whose search marks nothing the version it builds on left
    unmarked: within one scope (read_once) both search the same graph. A version with a row out of use loads its own,
    and the shared graph keeps its marks."""
    from models.answer.read_once import reading_once

    _, gallery, _ = indexed_store(tmp_path, monkeypatch)
    stored = stored_gallery(load_model(tmp_path / "store"))
    assert stored is not None and isinstance(stored.index, StoredIndex)
    products = [*gallery.products, "part-new"]
    new_photos = unit_rows(np.random.default_rng(9).normal(size=(4, DIM)))
    digests = ["e" * 63 + str(i) for i in range(4)]
    grown = stored.with_photos(new_photos, "part-new", [f"new/{i}.png" for i in range(4)], digests, 500, 0)
    fewer = stored.with_photos(new_photos[:1], "part-000", ["new/0.png"], digests[:1], 2, 0)  # part-000 keeps 2
    staged = {}
    for name, stored_rows in (("grown", grown), ("fewer", fewer)):
        folder = tmp_path / name
        folder.mkdir()
        record = write_gallery(folder, stored_rows, "spreads")
        staged[name] = read_gallery(record, folder.joinpath, products, folder, stored_spreads(stored_rows))
    with reading_once():
        served = stored.gallery(gallery.products).search
        written_gallery = staged["grown"].gallery(products)
        own = staged["fewer"].gallery(gallery.products).search
    written_search = written_gallery.search
    assert isinstance(served, GraphSearch) and isinstance(written_search, GraphSearch) and isinstance(own, GraphSearch)
    assert written_search.index is served.index and served.index.deleted == set()
    assert own.index is not served.index and len(own.index.deleted) == 8 - 2 and served.index.deleted == set()
    found, _ = written_search.nearest(new_photos, 1)  # the new photos: rows the shared graph does not hold
    assert [products[written_gallery.labels[r]] for r in found[:, 0]] == ["part-new"] * 4
    outside = stored.gallery(gallery.products).search  # outside a scope: a graph of its own
    assert isinstance(outside, GraphSearch) and outside.index is not served.index


def test_a_tampered_index_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version, _, _ = indexed_store(tmp_path, monkeypatch)
    graph = json.loads((version / "manifest.json").read_text())["gallery"]["index"]["graph"]
    data = bytearray((version / graph).read_bytes())
    data[len(data) // 2] ^= 0x01
    (version / graph).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=graph):
        load_model(version)


def test_an_index_record_naming_a_file_outside_the_version_is_refused() -> None:
    from models.errors import InvalidModel

    with pytest.raises(InvalidModel, match="outside the version"):
        StoredIndex.from_record({"graph": "../x.hnsw", "projection": "p.npz"})
    with pytest.raises(InvalidModel, match="no graph"):
        StoredIndex.from_record({"graph": 3})


def test_without_hnswlib_a_gallery_is_scanned_exactly_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    indexed_store(tmp_path, monkeypatch)
    monkeypatch.setattr(gallery_rows_module, "available", lambda: False)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(tmp_path / "store").gallery
    assert loaded is not None and loaded.search is None
    assert "hnswlib is not installed" in caplog.text


def test_a_batch_with_frames_on_a_line_answers_each_as_it_would_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, centres = indexed_store(tmp_path, monkeypatch)
    bundle = load_model(tmp_path / "store")
    assert bundle.gallery is not None
    answerer = Answerer(bundle.head, bundle.gallery, bundle.novelty)
    exact = Answerer(bundle.head, replace(bundle.gallery, search=None), bundle.novelty)
    queries = frames(centres, 6)
    line = np.zeros(len(bundle.head.products), dtype=bool)
    line[[3, 17, 40]] = True
    allowed = [None, line, None, line, None, None]
    mixed = answerer.answer(queries, allowed=allowed)
    for i, decision in enumerate(mixed):
        alone = exact.answer(queries[i : i + 1], allowed=[allowed[i]])[0]
        assert decision.product == alone.product and decision.novelty == pytest.approx(alone.novelty, abs=1e-6)
        assert [m["photo"] for m in decision.matches] == [m["photo"] for m in alone.matches]
    on_line = {bundle.head.products[i] for i in (3, 17, 40)}
    assert all(m["product"] in on_line for d in (mixed[1], mixed[3]) for m in d.matches)


def test_a_graph_and_projection_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from models.answer.photo_index import load_index

    features, names, _ = parts()
    gallery = gallery_of(features, names)
    record = build_index(gallery.features, keys_of(gallery)).save(tmp_path)
    graph, projection = tmp_path / record["graph"], tmp_path / record["projection"]
    assert load_index(graph, projection, DIM).size == len(features)
    with pytest.raises(ArtifactError, match="projection of 40-d"):
        load_index(graph, projection, 40)
    narrow_features = unit_rows(gallery.features[:, :32])
    (tmp_path / "narrow").mkdir()
    narrow = build_index(narrow_features, keys_of(gallery)).save(tmp_path / "narrow")
    with pytest.raises(ArtifactError, match="not a graph of"):  # a 32-d graph beside a 48-d projection
        load_index(tmp_path / "narrow" / narrow["graph"], projection, DIM)
    (tmp_path / "junk.hnsw").write_bytes(b"\x00" * 10)
    with pytest.raises(ArtifactError, match="not a photo index"):
        load_index(tmp_path / "junk.hnsw", projection, DIM)


def test_a_photo_twice_and_a_search_made_twice_are_handled() -> None:
    features, names, _ = parts(products=12, per_product=4)
    shas = [f"{i:064x}" for i in range(len(names))]
    gallery = build_gallery(  # photo 0 twice as its product (two paths, one sha256)
        np.vstack([features, features[:1]]),
        [*names, names[0]],
        [f"{i}.png" for i in range(len(names) + 1)],
        [*shas, shas[0]],
        sorted(set(names)),
    )
    keys = keys_of(gallery)
    index = build_index(gallery.features, keys)
    assert index.size == len(features)  # one graph row per key
    search = GraphSearch(index, keys, gallery.features)
    assert len(search.loose) == 1  # the second row of the key is scanned exactly
    rows, _ = search.nearest(gallery.features[:1], 2)
    assert sorted(rows[0].tolist()) == sorted(np.flatnonzero(gallery.sha256 == gallery.sha256[0]).tolist())
    again = GraphSearch(index, keys[2:], gallery.features[2:])  # the same graph searched for fewer rows
    assert len(index.deleted) >= 1 and again.nearest(gallery.features[2:3], 1)[0][0, 0] == 0
    GraphSearch(index, keys, gallery.features)  # and for all of them again: the marks are taken back
    assert index.deleted == set()


def test_a_graph_with_most_photos_out_of_use_is_built_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_threshold(monkeypatch)
    features, names, _ = parts()
    rows = rows_of(gallery_of(features, names)).with_index()
    first = rows.index
    assert isinstance(first, PhotoIndex)
    kept = replace(rows, rows=rows.rows.keeping(np.arange(rows.photos) % 3 != 0))  # a third out of use
    rebuilt = kept.with_index()
    assert isinstance(rebuilt.index, PhotoIndex) and rebuilt.index.size == kept.photos


def test_an_enrolments_checks_read_the_graph_and_agree_with_a_scan_of_the_grown_gallery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """look_alikes and novelty_check take the new photos' nearest photos from the gallery's graph, as a frame's
    search does: the same look-alikes as the exact scan, and the novelty check of a scan of the whole grown gallery
    (each photo without itself or a copy of it)."""
    from models.answer.novelty import answered_index, novelty_inputs
    from models.train.quick_enrolment import check_inputs, gallery_neighbours, look_alikes, novelty_check

    features, names, centres = parts(products=120, per_product=10)
    exact = gallery_of(features, names)
    search = GraphSearch(build_index(exact.features, keys_of(exact)), keys_of(exact), exact.features)
    indexed = replace(exact, search=search)
    rng = np.random.default_rng(3)
    product, centre = "part-120", centres[7] + 0.3 * rng.normal(size=DIM)  # a new look-alike of part-007
    new = unit_rows(centre + 0.6 * rng.normal(size=(40, DIM)))
    among = exact.similarities(exact.features)
    np.fill_diagonal(among, -np.inf)
    strays = np.flatnonzero(exact.labels[among.argmax(axis=1)] != exact.labels)  # nearest another product's photo
    new[:2] = exact.features[strays[:2]]  # copies of photos enrolled before: never their own match
    products = (*exact.products, product)
    head = ProductHead(
        products,
        tuple(f"family-{i % 20}" for i in range(len(products))),
        {None: logistic_classifier(products, 6.0 * np.vstack([centres, centre]), np.zeros(len(products)))},
        product_threshold=0.0,
        category_threshold=0.0,
    )
    group = look_alikes(head, indexed, new, product)
    assert group == look_alikes(head, exact, new, product) and "part-007" in group
    # a known product's own photos would fill its nearest photos (here 8 of its 10): its gallery is scanned
    from models.train import quick_enrolment

    monkeypatch.setattr(quick_enrolment, "NEIGHBOURS", 8)
    again = unit_rows(centres[7] + 0.6 * rng.normal(size=(10, DIM)))
    assert look_alikes(head, indexed, again, "part-007") == look_alikes(head, exact, again, "part-007")
    monkeypatch.undo()

    grown = gallery_of(np.vstack([features, new.astype(np.float16).astype(np.float32)]), names + [product] * len(new))
    similarities = grown.similarities(unit_rows(new))  # as the check takes them: normalised (the copies are float16)
    similarities[similarities > 0.9999] = -np.inf
    best = np.where(np.isfinite(best := grown.best_by_product(similarities)), best, -1.0)
    probabilities = head.probabilities(new)
    answered = answered_index(probabilities, head.categories)
    inputs = novelty_inputs(probabilities, best, answered, grown.spread_mean, grown.spread_std)
    novelty = NoveltyModel(np.array([-1.0, -0.5, -6.0, -0.2, -0.7]), 4.0, 0.5, 0.8)
    refused = novelty.score(inputs) >= novelty.threshold
    right = (np.asarray(products)[answered] == product) & ~refused
    spread = {p: (float(m), float(s)) for p, m, s in zip(products, grown.spread_mean, grown.spread_std, strict=True)}
    for gallery in (indexed, exact):
        found = gallery_neighbours(gallery, new)
        checked, checked_answers = check_inputs(head, gallery, spread, new, product, found)
        np.testing.assert_array_equal(checked_answers, answered)
        np.testing.assert_allclose(checked, inputs, atol=1e-5)
        report = novelty_check(head, gallery, spread, novelty, new, product, found)
        assert report["refused"] == round(float(refused.mean()), 4)
        assert report["answered_right"] == round(float(right.mean()), 4)
