"""A line's own ranker: the scope's arithmetic, its fit on a real version's training rows, and the worker's
background fitting (one fit per version and edit of a line, the mask alone until it is ready or when it fails)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from broker.line_rankers import RankerState
from models.answer.head import logistic_classifier
from models.answer.line_scope import line_scope, on_the_versions_scale, ranked_by_lines
from models.answer.object_rule import FrameVote
from models.bundle import load_model
from models.errors import ArtifactError, EnrolmentError
from models.store.plant_lines import Line
from models.train import line_ranker
from models.train.enrolment import stored_base_of
from models.train.line_ranker import LineRanker, LineRankerFits, fit_line_ranker
from tests.unit.test_lines import small_answerer
from worker.line_filter import LineScopes
from worker.pipeline import _on_the_versions_scale

PRODUCTS = ("p1", "p2", "p3", "p4")
BUNDLE = SimpleNamespace(head=SimpleNamespace(feature_dim=2))  # all LineScopes reads of a version: its head's size
CATEGORIES = ("tops", "tops", "bags", "bags")


def test_a_ranker_shares_the_lines_probability_out_again_among_its_products() -> None:
    answerer = small_answerer()
    frame = np.array([[0.9, 0.0, 0.43, 0.0]], dtype=np.float32)  # the head: p1, then p3; p4 last
    frames = np.repeat(frame, 3, axis=0)
    mask = np.array([False, True, True, True])
    # a ranker over p3 and p4 that prefers p4 for this frame (its first feature)
    ranker = logistic_classifier(("p3", "p4"), np.array([[-4.0, 0, 0, 0], [4.0, 0, 0, 0]], np.float32), np.zeros(2))
    scope = line_scope(PRODUCTS, mask, ranker)
    free, masked, ranked = answerer.answer(frames, matches=3, allowed=[None, mask, scope])
    assert free.product == "p1" and masked.top_k[0]["product"] == "p3"
    assert ranked.top_k[0]["product"] == "p4"
    scores = {entry["product"]: entry["score"] for entry in ranked.top_k}
    before = {entry["product"]: entry["score"] for entry in masked.top_k}
    assert scores["p2"] == pytest.approx(before["p2"])  # outside the ranker: untouched
    assert scores["p3"] + scores["p4"] == pytest.approx(before["p3"] + before["p4"], abs=1e-5)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(match["product"] != "p1" for match in ranked.matches)


def test_a_line_with_its_own_novelty_threshold_refuses_by_it() -> None:
    answerer = small_answerer()
    frames = np.repeat(np.array([[0.9, 0.0, 0.43, 0.0]], dtype=np.float32), 3, axis=0)
    mask = np.array([True, True, True, False])
    strict, lenient = line_scope(PRODUCTS, mask, novelty_threshold=0.0), line_scope(PRODUCTS, mask, None, 1.0)
    plain, refused, kept = answerer.answer(frames, allowed=[mask, strict, lenient])
    assert refused.status == "unknown" and refused.novel and refused.novelty == plain.novelty
    assert kept.status == plain.status and kept.product == plain.product and not kept.novel


def test_rows_of_one_ranker_are_scored_together_and_others_left_alone() -> None:
    ranker = logistic_classifier(("p1", "p2"), np.array([[1.0, 0], [0, 1.0]], np.float32), np.zeros(2))
    scope = line_scope(("p1", "p2", "p3"), np.array([True, True, False]), ranker)
    probabilities = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [0.3, 0.7, 0.0]])
    features = np.array([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0]], dtype=np.float32)
    result = ranked_by_lines(probabilities, features, [scope, None, scope])
    assert result[1].tolist() == [0.2, 0.2, 0.6]
    assert result[0, 0] > 0.9 and result[2, 1] > 0.9 and result[0].sum() == pytest.approx(1.0)


def test_a_ranker_of_products_outside_the_line_is_refused() -> None:
    ranker = logistic_classifier(("p1", "p2"), np.eye(2, 4, dtype=np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="outside the line"):
        line_scope(PRODUCTS, np.array([False, True, True, True]), ranker)
    with pytest.raises(ValueError, match="mask"):
        line_scope(PRODUCTS, np.array([True, True]))


def test_a_ranker_is_fitted_on_the_versions_photos_of_the_lines_products(model_store: Path) -> None:
    bundle = load_model(model_store)
    line = list(bundle.head.products[:3])
    fitted = fit_line_ranker(bundle, [*line, "no-such-product"])
    assert fitted is not None and fitted.classifier.classes == tuple(sorted(line))
    ranker = fitted.classifier
    stored, _ = stored_base_of(bundle)
    products = stored.columns["products"].astype(str)
    rows = stored.in_use & np.isin(products, line) & ~stored.columns["synthetic"].astype(bool)
    guesses = np.asarray(ranker.classes)[ranker.probabilities(stored.columns["features"][rows]).argmax(axis=1)]
    assert (guesses == products[rows]).mean() >= 0.9  # its own photos: a fit that learnt nothing fails here
    assert fitted.novelty_threshold is not None and 0.0 < fitted.novelty_threshold < 1.0  # three products: its own
    pair = fit_line_ranker(bundle, line[:2])
    assert pair is not None and pair.novelty_threshold is None  # too few to hide some: the version's threshold
    assert fit_line_ranker(bundle, line[:1]) is None  # one product: nothing to rank
    assert fit_line_ranker(bundle, [line[0], "no-such-product"]) is None


def test_a_workers_fits_read_a_versions_rows_once_until_released(
    model_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_model(model_store)
    reads: list[str] = []

    def counted(version: Any) -> Any:
        reads.append(version.version)
        return stored_base_of(version)

    monkeypatch.setattr(line_ranker, "stored_base_of", counted)
    fits = LineRankerFits()
    first, second = fits(bundle, bundle.head.products[:3]), fits(bundle, bundle.head.products[3:6])
    assert first is not None and second is not None and reads == [bundle.version]
    assert second.classifier.classes == tuple(sorted(bundle.head.products[3:6]))
    assert fits(bundle, bundle.head.products[:1]) is None and len(reads) == 1  # nothing to fit, nothing read
    fits.release()
    assert fits(bundle, bundle.head.products[:2]) is not None and len(reads) == 2


def test_a_version_without_training_rows_has_no_ranker(model_store: Path) -> None:
    bundle = load_model(model_store)
    manifest = {key: value for key, value in bundle.manifest.items() if key != "enrolment_base"}
    with pytest.raises(EnrolmentError, match="keeps no training features"):
        fit_line_ranker(dataclasses.replace(bundle, manifest=manifest), bundle.head.products[:2])


class Fits:
    """A ranker fit that counts its calls and can be held or made to fail."""

    def __init__(self, result: Any = "ranker") -> None:
        self.calls: list[tuple[str, ...]] = []
        self.go = threading.Event()
        self.go.set()
        self.result = result
        self.released = 0

    def release(self) -> None:
        self.released += 1

    def __call__(self, bundle: Any, products: Any) -> Any:
        self.calls.append(tuple(products))
        self.go.wait(5)
        if isinstance(self.result, Exception):
            raise self.result
        if self.result == "ranker":
            classifier = logistic_classifier(tuple(products), np.eye(len(products), 2, dtype=np.float32), np.zeros(2))
            return LineRanker(classifier, 0.4)
        return self.result


def scopes_with(fits: Fits) -> tuple[LineScopes, list[str]]:
    outcomes: list[str] = []
    return LineScopes(fit=fits, on_fitted=lambda outcome, seconds: outcomes.append(outcome)), outcomes


def test_a_lines_ranker_is_fitted_once_in_the_background_and_used_when_ready() -> None:
    fits = Fits()
    fits.go.clear()
    scopes, outcomes = scopes_with(fits)
    line = Line("press-3", products=("p2",), categories=("bags",), updated_at="t1")
    first = scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert first is not None and first.ranker is None and first.mask.tolist() == [False, True, True, True]
    again = scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert again is not None and again.ranker is None  # still fitting: the mask alone, and no second fit
    fits.go.set()
    assert scopes.wait()
    ready = scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert ready is not None and ready.ranker is not None and ready.ranker.classes == ("p2", "p3", "p4")
    assert ready.novelty_threshold == 0.4
    assert fits.calls == [("p2", "p3", "p4")] and outcomes == ["fitted"]
    edited = Line("press-3", products=("p1", "p2"), updated_at="t2")  # an edit of the line: fitted again
    scopes.scope("v1", PRODUCTS, CATEGORIES, edited, bundle=BUNDLE)  # type: ignore[arg-type]
    assert scopes.wait()
    scopes.scope("v2", PRODUCTS, CATEGORIES, edited, bundle=BUNDLE)  # type: ignore[arg-type]  # a new version too
    assert scopes.wait() and fits.calls[1:] == [("p1", "p2"), ("p1", "p2")]
    assert scopes.scope("v9", PRODUCTS, CATEGORIES, None) is None
    scopes.close()


def test_a_fit_queued_for_a_version_no_longer_served_is_skipped_and_a_closed_one_takes_none() -> None:
    fits = Fits()
    fits.go.clear()
    scopes, outcomes = scopes_with(fits)
    first, second = Line("a", products=("p1", "p2")), Line("b", products=("p3", "p4"))
    scopes.scope("v1", PRODUCTS, CATEGORIES, first, bundle=BUNDLE)  # type: ignore[arg-type]  # fitting, held
    scopes.scope("v1", PRODUCTS, CATEGORIES, second, bundle=BUNDLE)  # type: ignore[arg-type]  # queued
    scopes.scope("v2", PRODUCTS, CATEGORIES, second, bundle=BUNDLE)  # type: ignore[arg-type]  # v2 served now
    fits.go.set()
    assert scopes.wait()
    assert fits.calls == [("p1", "p2"), ("p3", "p4")] and outcomes == ["fitted", "fitted"]
    assert fits.released == 1  # what the fits kept (a version's rows) goes once none is waiting
    ready = scopes.scope("v2", PRODUCTS, CATEGORIES, second, bundle=BUNDLE)  # type: ignore[arg-type]
    assert ready is not None and ready.ranker is not None
    scopes.close()
    late = scopes.scope("v3", PRODUCTS, CATEGORIES, second, bundle=BUNDLE)  # type: ignore[arg-type]
    assert late is not None and late.ranker is None and len(fits.calls) == 2  # answered, nothing submitted


def test_a_vote_on_a_line_is_put_on_the_versions_scale_for_its_object() -> None:
    assert on_the_versions_scale(0.3, 0.3, 0.5) == pytest.approx(0.5)
    assert on_the_versions_scale(0.2, 0.3, 0.5) < 0.5 < on_the_versions_scale(0.4, 0.3, 0.5)
    vote = FrameVote("f1", 1.0, "p1", "tops", 0.9, 0.3, True)
    scope = line_scope(PRODUCTS, np.ones(4, dtype=bool), novelty_threshold=0.3)
    assert _on_the_versions_scale(vote, scope, 0.5).novelty == pytest.approx(0.5)
    assert _on_the_versions_scale(vote, None, 0.5) is vote  # the whole catalog: as answered
    assert _on_the_versions_scale(vote, line_scope(PRODUCTS, np.ones(4, dtype=bool)), 0.5) is vote


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (ArtifactError("a shard is missing"), "failed"),
        (KeyError("anything else"), "failed"),
        (EnrolmentError("keeps no training features", "not_enrollable"), "none"),
        (None, "none"),
    ],
)
def test_a_line_without_a_ranker_keeps_its_mask_and_is_not_fitted_again(result: Any, outcome: str) -> None:
    fits = Fits(result)
    scopes, outcomes = scopes_with(fits)
    line = Line("press-3", products=("p1", "p3"), updated_at="t1")
    for _ in range(3):
        scope = scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
        assert scopes.wait()
        assert scope is not None and scope.ranker is None and scope.mask.tolist() == [True, False, True, False]
    assert len(fits.calls) == 1 and outcomes == [outcome]
    without_bundle = LineScopes(fit=fits)
    assert without_bundle.scope("v1", PRODUCTS, CATEGORIES, line) is not None and len(fits.calls) == 1


def test_a_ranker_of_another_size_than_the_head_is_refused_off_the_frames_path() -> None:
    scopes, outcomes = scopes_with(Fits())
    line, other_size = Line("x", products=("p1", "p2")), SimpleNamespace(head=SimpleNamespace(feature_dim=9))
    scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=other_size)  # type: ignore[arg-type]
    assert scopes.wait() and outcomes == ["failed"]
    scope = scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=other_size)  # type: ignore[arg-type]
    assert scope is not None and scope.ranker is None


def test_each_try_is_told_as_the_lines_ranker_state_and_a_failing_teller_changes_nothing() -> None:
    states: list[RankerState] = []
    scopes = LineScopes(fit=Fits(), on_state=states.append)
    line = Line("press-3", products=("p1", "p2"), updated_at="t1")
    scopes.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert scopes.wait()
    (state,) = states
    assert (state.line, state.line_updated_at, state.version, state.outcome) == ("press-3", "t1", "v1", "fitted")
    assert state.products == 2 and state.novelty_threshold == 0.4 and state.seconds >= 0 and state.at > 0
    failing = LineScopes(fit=Fits(KeyError("anything")), on_state=states.append)
    failing.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert failing.wait() and states[-1].outcome == "failed" and states[-1].products == 0

    def away(state: RankerState) -> None:
        raise ConnectionError("Redis is away")

    quiet = LineScopes(fit=Fits(), on_state=away)
    quiet.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert quiet.wait()
    ready = quiet.scope("v1", PRODUCTS, CATEGORIES, line, bundle=BUNDLE)  # type: ignore[arg-type]
    assert ready is not None and ready.ranker is not None  # fitted and used all the same
    for each in (scopes, failing, quiet):
        each.close()
