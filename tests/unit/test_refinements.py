"""Refinements: a product added to a head without refitting its nodes (pure: arrays, no store)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.answer.arrays import read_arrays
from models.answer.classifiers import Classifier
from models.answer.head import CATEGORY_FIRST, ProductHead, logistic_classifier
from models.answer.refinements import (
    UNREFINED_MASS,
    Refinement,
    RefinementLayout,
    read_refinements,
    write_refinements,
)
from models.errors import InvalidModel
from models.train.consolidation import later_refinements

DIM = 3


def logistic(classes: list[str], coef: list[list[float]]) -> Classifier:
    return logistic_classifier(classes, np.array(coef, np.float32), np.zeros(len(classes), np.float32))


def base_head() -> ProductHead:
    """Category-first: tools {hammer, saw} and parts {bolt}; each axis of the features says one product."""
    top = logistic(["parts", "tools"], [[-4, -4, 8], [4, 4, -8]])
    tools = logistic(["hammer", "saw"], [[8, -8, 0], [-8, 8, 0]])
    return ProductHead(
        ("hammer", "saw", "bolt"), ("tools", "tools", "parts"), {None: top, "tools": tools}, structure=CATEGORY_FIRST
    )


def saw_variant(source: str = "v2") -> Refinement:
    """A finer saw, told from the saw by the sign of the saw's axis: it takes the saw's probability where that is
    negative."""
    return Refinement("saw-fine", logistic(["saw", "saw-fine"], [[0, 6, 0], [0, -6, 0]]), source)


def test_a_refinement_shares_out_its_groups_probability_and_leaves_the_rest() -> None:
    head = base_head()
    # a saw, a tool that is a little saw with the saw's axis negative, a hammer and a bolt
    x = np.array([[0.0, 1.0, 0.0], [0.0, -0.2, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    before = head.probabilities(x)
    after = head.refined_by(saw_variant(), "tools")
    probabilities = after.probabilities(x)
    assert after.products == ("hammer", "saw", "bolt", "saw-fine") and after.base_products == head.products
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(probabilities[:, [0, 2]], before[:, [0, 2]], atol=1e-9)  # outside the group: as before
    np.testing.assert_allclose(probabilities[:, 1] + probabilities[:, 3], before[:, 1], atol=1e-9)
    assert probabilities[0, 1] > 0.99 and probabilities[1, 3] > probabilities[1, 1]
    assert after.decide(probabilities[0]).product == "saw"


def test_refinements_apply_in_order_and_a_later_one_may_name_an_earlier_ones_product() -> None:
    first = base_head().refined_by(saw_variant("v2"), "tools")
    second = Refinement("saw-coarse", logistic(["saw-fine", "saw-coarse"], [[0, 0, 1], [0, 0, -1]]), "v3")
    head = first.refined_by(second, "tools")
    x = np.array([[0.0, -1.0, 0.3]], np.float32)
    widened = np.hstack([first.probabilities(x), np.zeros((1, 1))])  # saw-coarse: nothing before its refinement
    expected = RefinementLayout(head.products, (second,)).apply(widened, x)
    np.testing.assert_allclose(head.probabilities(x), expected, atol=1e-9)
    assert head.products[-2:] == ("saw-fine", "saw-coarse")


def every_refinement_row_by_row(probabilities: np.ndarray, x: np.ndarray, head: ProductHead) -> np.ndarray:
    """The rule without the layout's shortcuts: each refinement, in order, on each row whose group holds at least
    UNREFINED_MASS."""
    column = {product: index for index, product in enumerate(head.products)}
    result = np.array(probabilities, dtype=np.float64)
    for refinement in head.refinements:
        columns = [column[name] for name in refinement.classifier.classes]
        for row in range(len(result)):
            mass = result[row, columns].sum()
            if mass >= UNREFINED_MASS:
                result[row, columns] = mass * refinement.classifier.probabilities(x[row : row + 1])[0]
    return result


def test_a_frame_pays_only_for_the_refinements_of_what_it_may_be_and_rows_stay_apart() -> None:
    # saw-fine refines the saw; saw-coarse (over saw-fine) holds nothing until saw-fine's refinement gave it some;
    # bolt-long refines the bolt. A saw frame needs the first two, a bolt frame the third alone.
    coarse = Refinement("saw-coarse", logistic(["saw-fine", "saw-coarse"], [[0, 0, 1], [0, 0, -1]]), "v3")
    long_bolt = Refinement("bolt-long", logistic(["bolt", "bolt-long"], [[0, 0, 1], [0, 1, 0]]), "v4")
    head = base_head().refined_by(saw_variant(), "tools").refined_by(coarse, "tools").refined_by(long_bolt, "parts")
    x = np.array([[0.0, -0.2, -1.0], [0.0, 0.0, 1.0], [0.0, 0.2, 1.0], [1.0, 0.0, 0.0]], np.float32)
    nodes = np.hstack([base_head().probabilities(x), np.zeros((len(x), 3))])
    together = head.probabilities(x)
    np.testing.assert_allclose(together, every_refinement_row_by_row(nodes, x, head), atol=1e-12)
    for row in range(len(x)):  # alone or beside others, a row comes out the same
        np.testing.assert_allclose(head.probabilities(x[row : row + 1])[0], together[row], atol=1e-12)
    everywhere = refined_everywhere(nodes, x, head)
    np.testing.assert_allclose(together, everywhere, atol=UNREFINED_MASS)  # what was skipped held less than that
    # a little saw: saw-coarse, whose group held nothing as the head gave it, refined once saw-fine's gave it some
    assert together[0, 4] > together[0, 3] > 0.0
    assert together[0, 5] == 0.0 < everywhere[0, 5]  # its bolt group held too little to be refined
    assert together[3, 3] == together[3, 4] == together[3, 5] == 0.0  # a hammer: nothing of it refined
    assert together[1, 5] > 0.2 and together[2, 5] > 0.2  # bolts: bolt-long refined
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-9)


def test_a_frame_on_a_line_gets_every_refinement_of_its_lines_products_however_little_they_hold() -> None:
    long_bolt = Refinement("bolt-long", logistic(["bolt", "bolt-long"], [[0, 0, 1], [0, 1, 0]]), "v4")
    head = base_head().refined_by(saw_variant(), "tools").refined_by(long_bolt, "parts")
    x = np.array([[0.0, -0.2, -1.0], [0.0, -0.2, -1.0]], np.float32)  # a little saw, off a line then on one
    allowed = np.array([[True] * 5, [False, False, True, False, True]])  # the second on a line of the bolts
    nodes = np.hstack([base_head().probabilities(x), np.zeros((2, 2))])
    probabilities = head.probabilities(x, allowed)
    assert probabilities[0, 4] == 0.0  # off the line, its bolt group held too little to be refined
    everywhere = refined_everywhere(nodes, x, head)
    assert probabilities[1, 4] > 0.0
    np.testing.assert_allclose(probabilities[1, [2, 4]], everywhere[1, [2, 4]], rtol=1e-9)  # the line's products


def test_a_frame_on_a_line_gets_the_refinements_that_feed_its_lines_products() -> None:
    # saw-fine takes from the saw; saw-coarse takes from saw-fine; a line of saw-coarse and the bolt: a bolt-ish
    # frame whose saw holds too little off the line still has saw-fine's share passed on to saw-coarse on it
    coarse = Refinement("saw-coarse", logistic(["saw-fine", "saw-coarse"], [[0, 0, 1], [0, 0, -1]]), "v3")
    head = base_head().refined_by(saw_variant(), "tools").refined_by(coarse, "tools")
    x = np.array([[0.0, -0.2, 1.0]], np.float32)
    nodes = np.hstack([base_head().probabilities(x), np.zeros((1, 2))])
    assert nodes[0, 1] < UNREFINED_MASS  # the saw's group holds too little to be refined off a line
    allowed = np.array([[False, False, True, False, True]])
    probabilities = head.probabilities(x, allowed)
    everywhere = refined_everywhere(nodes, x, head)
    assert probabilities[0, 4] > 0.0
    np.testing.assert_allclose(probabilities[0, [2, 4]], everywhere[0, [2, 4]], rtol=1e-9)
    assert head.probabilities(x)[0, 4] == 0.0  # off the line: skipped


def refined_everywhere(probabilities: np.ndarray, x: np.ndarray, head: ProductHead) -> np.ndarray:
    """Every refinement on every row, however little its group holds (how heads applied them before)."""
    column = {product: index for index, product in enumerate(head.products)}
    result = np.array(probabilities, dtype=np.float64)
    for refinement in head.refinements:
        columns = [column[name] for name in refinement.classifier.classes]
        mass = result[:, columns].sum(axis=1, keepdims=True)
        result[:, columns] = mass * refinement.classifier.probabilities(x)
    return result


def test_a_layout_knows_which_later_refinements_share_a_product() -> None:
    coarse = Refinement("saw-coarse", logistic(["saw-fine", "saw-coarse"], [[0, 0, 1], [0, 0, -1]]), "v3")
    long_bolt = Refinement("bolt-long", logistic(["bolt", "bolt-long"], [[0, 0, 1], [0, 1, 0]]), "v4")
    head = base_head().refined_by(saw_variant(), "tools").refined_by(coarse, "tools").refined_by(long_bolt, "parts")
    layout = RefinementLayout(head.products, head.refinements)
    assert [c.tolist() for c in layout.columns] == [[1, 3], [3, 4], [2, 5]]
    assert layout._later == [[1], [], []]
    assert layout._feeds.tolist() == [[True, True, False], [False, True, False], [False, False, True]]


def test_a_refinement_may_bring_new_photos_of_a_known_product_or_a_new_category() -> None:
    more_bolts = Refinement("bolt", logistic(["hammer", "bolt"], [[1, 0, 0], [0, 0, 1]]), "v2", new=False)
    head = base_head().refined_by(more_bolts, "parts")
    assert head.products == base_head().products
    gauge = Refinement("gauge", logistic(["bolt", "gauge"], [[0, 0, 1], [0, 0, -1]]), "v3")
    head = head.refined_by(gauge, "gauges")
    decision = head.decide(head.probabilities(np.array([[0.0, 0.0, -1.0]], np.float32))[0])
    assert head.categories[-1] == "gauges" and decision.top_k[0]["category"] in {"gauges", "tools"}


@pytest.mark.parametrize(
    ("refinement", "message"),
    [
        (Refinement("x", logistic(["nut", "x"], [[1, 0, 0], [0, 1, 0]]), "v2"), "no node knows"),
        (Refinement("saw", logistic(["hammer", "saw"], [[1, 0, 0], [0, 1, 0]]), "v2"), "each once"),
        (Refinement("x", logistic(["hammer", "x"], [[1, 0, 0], [0, 1, 0]]), "v2", new=False), "lacks"),
        (Refinement("x", logistic(["hammer", "saw"], [[1, 0, 0], [0, 1, 0]]), "v2"), "not over it"),
    ],
)
def test_a_refinement_that_does_not_fit_the_head_is_refused(refinement: Refinement, message: str) -> None:
    with pytest.raises(InvalidModel, match=message):
        base_head().refined_by(refinement, "tools")


def test_a_refinement_that_cannot_answer_is_refused_at_load_though_the_probe_frame_skips_it() -> None:
    # the top node all but sure of parts at the zero frame: the tools' refinements are skipped there, yet one whose
    # arrays hold three rows for its two products fails the head's load, not the first frame that reaches it
    top = logistic_classifier(
        ["parts", "tools"], np.array([[-4, -4, 8], [4, 4, -8]], np.float32), np.array([6, -6], np.float32)
    )
    head = ProductHead(
        ("hammer", "saw", "bolt"),
        ("tools", "tools", "parts"),
        {None: top, "tools": base_head().classifiers["tools"]},
        structure=CATEGORY_FIRST,
    )
    assert head.probabilities(np.zeros((1, DIM), np.float32))[0, 1] < UNREFINED_MASS
    broken = Refinement("saw-fine", logistic(["saw", "saw-fine"], [[0, 6, 0], [0, -6, 0], [1, 1, 1]]), "v2")
    with pytest.raises(InvalidModel, match="the refinement for saw-fine"):
        head.refined_by(broken, "tools")


def test_the_products_refinements_add_come_last() -> None:
    head = base_head().refined_by(saw_variant(), "tools")
    with pytest.raises(InvalidModel, match="must come last"):
        ProductHead(
            ("saw-fine", "hammer", "saw", "bolt"),
            ("tools", "tools", "tools", "parts"),
            head.classifiers,
            structure=CATEGORY_FIRST,
            refinements=head.refinements,
        )


def test_refinements_round_trip_as_content_named_files(tmp_path: Path) -> None:
    more_bolts = Refinement("bolt", logistic(["hammer", "bolt"], [[1, 0, 0], [0, 0, 1]]), "v3", new=False)
    refinements = (saw_variant("v2"), more_bolts)
    records = write_refinements(tmp_path, refinements)
    (tmp_path / "next").mkdir()
    again = write_refinements(tmp_path / "next", refinements[:1])
    assert again[0]["file"] == records[0]["file"]  # the same refinement, the same file: the next version links it

    def arrays_of(name: str) -> dict[str, np.ndarray]:
        return read_arrays(tmp_path / name)

    restored = read_refinements(records, arrays_of)
    assert [(r.product, r.source, r.new, r.classifier.classes) for r in restored] == [
        (r.product, r.source, r.new, r.classifier.classes) for r in refinements
    ]
    np.testing.assert_array_equal(restored[0].classifier.arrays["coef"], refinements[0].classifier.arrays["coef"])
    with pytest.raises(InvalidModel):
        read_refinements("not a list", arrays_of)
    with pytest.raises(InvalidModel):
        read_refinements([{"source": "v2"}], arrays_of)
    with pytest.raises(InvalidModel, match="names no file"):
        read_refinements([{k: v for k, v in records[0].items() if k != "file"}], arrays_of)


def test_consolidation_carries_only_the_refinements_made_after_the_version_it_refitted() -> None:
    refitted_from = base_head().refined_by(saw_variant("v2"), "tools")
    gauge = Refinement("gauge", logistic(["bolt", "gauge"], [[0, 0, 1], [0, 0, -1]]), "v3")
    latest = refitted_from.refined_by(gauge, "gauges")
    assert later_refinements(refitted_from, refitted_from) == ()
    assert later_refinements(refitted_from, latest) == (gauge,)
    assert later_refinements(latest, refitted_from) is None  # current went back: not built on it
    assert later_refinements(refitted_from, base_head()) is None  # consolidated by someone else, or trained anew


def test_a_consolidation_searches_as_a_training_of_its_catalog_and_the_kinds_training_chose() -> None:
    from models.answer.classifiers import KINDS, PREPROCESSING, Candidate
    from models.train.consolidation import search_of
    from models.train.enrolment_base import Choices

    svm = {None: (Candidate("rbf_svm", 10.0, "standardize"), 2.0)}
    recorded = Choices("category-first", svm, search_named=(None, None))
    assert search_of(recorded, 18)[:2] == (KINDS, PREPROCESSING)  # every kind, as a training of 18 products
    assert search_of(recorded, 41)[:2] == (("logistic", "rbf_svm"), ("none", "standardize"))  # past 40: narrowed
    named = Choices("flat", {None: (Candidate("logistic", 30.0), 1.0)}, search_named=(("logistic",), None))
    assert search_of(named, 18)[:2] == (("logistic",), PREPROCESSING)  # what the operator named holds
    assert search_of(replace(named, search_named=(("logistic",), ("none",))), 18)[:2] == (("logistic",), ("none",))
    before = Choices("category-first", svm)  # written before the search named was recorded
    assert search_of(before, 18)[:2] == (("logistic", "rbf_svm"), ("none", "standardize"))
    assert Choices.from_record(recorded.record()) == recorded and Choices.from_record(named.record()) == named
    assert Choices.from_record(before.record()) == before
    old_manifest = {key: value for key, value in before.record().items() if key != "search_named"}
    assert Choices.from_record(old_manifest) == before  # a manifest written before has no such key
