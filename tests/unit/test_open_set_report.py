"""The training report's open-set figures: never-seen products refused, known ones still answered right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.train.report import (
    MAX_CURVE_POINTS,
    REPORT_FILES,
    confused_pairs,
    confused_with,
    evaluation,
    open_set_by_product,
    open_set_curve,
    write_report,
)

# six frames, highest novelty first; rows 0 and 2 are of products hidden from the classifier
NOVELTY = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1])
UNSEEN = np.array([True, False, True, False, False, False])
CORRECT = np.array([False, True, True, True, False, True])  # rows 0 and 2 ignored: never-seen
PRODUCTS = np.array(["hose", "pump", "hose", "pump", "valve", "pump"])


def test_the_shipped_point_auroc_and_curve_worked_out_by_hand() -> None:
    result = open_set_curve(NOVELTY, UNSEEN, CORRECT, 0.5)
    # refused (>= 0.5): rows 0, 1, 2; known answered right: rows 3 and 5 of the known 1, 3, 4, 5
    assert {key: value for key, value in result.items() if key != "curve"} == {
        "auroc": 0.875,  # 0.9 beats all four known, 0.6 all but 0.8: 7 of 8 pairs
        "threshold": 0.5,
        "unseen_refused": 1.0,
        "known_answered_right": 0.5,
        "known_refused": 0.25,
        "unseen_frames": 2,
        "known_frames": 4,
    }
    assert result["curve"] == [
        {"threshold": 0.9, "unseen_refused": 0.5, "known_answered_right": 0.75},
        {"threshold": 0.8, "unseen_refused": 0.5, "known_answered_right": 0.5},
        {"threshold": 0.6, "unseen_refused": 1.0, "known_answered_right": 0.5},
        {"threshold": 0.4, "unseen_refused": 1.0, "known_answered_right": 0.25},
        {"threshold": 0.3, "unseen_refused": 1.0, "known_answered_right": 0.25},
        {"threshold": 0.1, "unseen_refused": 1.0, "known_answered_right": 0.0},
    ]
    assert json.loads(json.dumps(result)) == result  # JSON-ready: plain floats and ints


def test_equal_novelties_are_one_cut_and_a_score_at_the_threshold_is_refused() -> None:
    result = open_set_curve(
        np.array([0.7, 0.7, 0.2]), np.array([True, False, False]), np.array([True, True, True]), 0.7
    )
    assert result["auroc"] == 0.75  # a tie with the known 0.7 counts half
    assert (result["unseen_refused"], result["known_refused"], result["known_answered_right"]) == (1.0, 0.5, 0.5)
    assert result["curve"] == [
        {"threshold": 0.7, "unseen_refused": 1.0, "known_answered_right": 0.5},
        {"threshold": 0.2, "unseen_refused": 1.0, "known_answered_right": 0.0},
    ]


def test_a_threshold_above_every_score_refuses_nothing() -> None:
    result = open_set_curve(NOVELTY, UNSEEN, CORRECT, 0.95)
    assert (result["unseen_refused"], result["known_refused"], result["known_answered_right"]) == (0.0, 0.0, 0.75)
    assert result["auroc"] == 0.875 and len(result["curve"]) == 6  # the threshold changes neither


def test_all_frames_never_seen_has_no_auroc_and_no_known_shares() -> None:
    result = open_set_curve(np.array([0.9, 0.2]), np.array([True, True]), np.array([True, True]), 0.5)
    assert result["auroc"] is None
    assert (result["unseen_frames"], result["known_frames"]) == (2, 0)
    assert (result["unseen_refused"], result["known_answered_right"], result["known_refused"]) == (0.5, 0.0, 0.0)
    assert result["curve"] == [
        {"threshold": 0.9, "unseen_refused": 0.5, "known_answered_right": 0.0},
        {"threshold": 0.2, "unseen_refused": 1.0, "known_answered_right": 0.0},
    ]


def test_no_frame_never_seen_has_no_auroc_and_nothing_unseen_refused() -> None:
    result = open_set_curve(np.array([0.9, 0.2, 0.1]), np.zeros(3, dtype=bool), np.array([True, True, False]), 0.5)
    assert result["auroc"] is None and result["unseen_frames"] == 0 and result["unseen_refused"] == 0.0
    assert result["known_refused"] == round(1 / 3, 6) and result["known_answered_right"] == round(1 / 3, 6)
    assert [p["known_answered_right"] for p in result["curve"]] == [round(1 / 3, 6), 0.0, 0.0]
    assert all(p["unseen_refused"] == 0.0 for p in result["curve"])


def test_no_frames_at_all() -> None:
    empty = np.array([])
    result = open_set_curve(empty, empty.astype(bool), empty.astype(bool), 0.5)
    assert result == {
        "auroc": None,
        "threshold": 0.5,
        "unseen_refused": 0.0,
        "known_answered_right": 0.0,
        "known_refused": 0.0,
        "unseen_frames": 0,
        "known_frames": 0,
        "curve": [],
    }
    assert open_set_by_product(empty, empty.astype(str), empty.astype(bool), empty.astype(bool), 0.5) == []


def test_the_curve_stays_small_and_keeps_both_ends() -> None:
    novelty = np.linspace(0, 1, 5000)
    result = open_set_curve(novelty, novelty > 0.5, np.ones(5000, dtype=bool), 0.5)
    curve = result["curve"]
    assert len(curve) == MAX_CURVE_POINTS
    assert curve[0]["threshold"] == 1.0 and curve[-1]["threshold"] == 0.0
    assert curve[-1] == {"threshold": 0.0, "unseen_refused": 1.0, "known_answered_right": 0.0}
    assert result["auroc"] == 1.0  # every never-seen frame scores above every known one


def test_per_product_shares_worked_out_by_hand() -> None:
    rows = open_set_by_product(NOVELTY, PRODUCTS, UNSEEN, CORRECT, 0.5)
    assert rows == [
        {
            "product": "hose",
            "never_seen_frames": 2,
            "refused_when_never_seen": 1.0,
            "known_frames": 0,
            "answered_right_when_known": 0.0,
            "refused_when_known": 0.0,
        },
        {
            "product": "pump",
            "never_seen_frames": 0,
            "refused_when_never_seen": 0.0,
            "known_frames": 3,
            "answered_right_when_known": round(2 / 3, 6),
            "refused_when_known": round(1 / 3, 6),
        },
        {  # wrong, not refused
            "product": "valve",
            "never_seen_frames": 0,
            "refused_when_never_seen": 0.0,
            "known_frames": 1,
            "answered_right_when_known": 0.0,
            "refused_when_known": 0.0,
        },
    ]


def test_a_product_hidden_in_one_fold_and_known_in_another_is_counted_apart() -> None:
    rows = open_set_by_product(
        np.array([0.1, 0.9, 0.2]), np.array(["a", "a", "a"]), np.array([True, True, False]), np.ones(3, bool), 0.5
    )
    assert rows == [
        {
            "product": "a",
            "never_seen_frames": 2,
            "refused_when_never_seen": 0.5,
            "known_frames": 1,
            "answered_right_when_known": 1.0,
            "refused_when_known": 0.0,
        }
    ]


def test_confused_pairs_count_both_directions_largest_first_ties_by_name() -> None:
    truth = np.array(["a", "a", "b", "b", "b", "c", "c", "a", "d", "e", "e"])
    predicted = np.array(["b", "b", "a", "c", "b", "b", "a", "a", "d", "d", "d"])
    assert confused_pairs(truth, predicted) == [
        {"products": ["a", "b"], "count": 3, "a_as_b": 2, "b_as_a": 1},
        {"products": ["b", "c"], "count": 2, "a_as_b": 1, "b_as_a": 1},
        {"products": ["d", "e"], "count": 2, "a_as_b": 0, "b_as_a": 2},  # ties with b/c, after it by name
        {"products": ["a", "c"], "count": 1, "a_as_b": 0, "b_as_a": 1},
    ]
    assert [row["products"] for row in confused_pairs(truth, predicted, top=2)] == [["a", "b"], ["b", "c"]]
    assert confused_pairs(truth, predicted, top=0) == []


def test_each_products_look_alikes_with_the_share_of_its_fold_answers() -> None:
    truth = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c", "d"])
    predicted = np.array(["b", "b", "c", "a", "a", "b", "b", "c", "c", "d"])
    assert confused_with(truth, predicted) == {
        "a": [{"product": "b", "share": 0.5}, {"product": "c", "share": 0.25}],  # the most mistaken first
        "b": [{"product": "a", "share": 0.3333}],
    }
    assert confused_with(truth, predicted, top=1)["a"] == [{"product": "b", "share": 0.5}]
    assert confused_with(truth, truth) == {}


def test_the_report_lists_look_alikes(tmp_path: Path) -> None:
    report = _report()
    report["look_alikes"] = confused_with(np.array(["pump", "valve", "valve"]), np.array(["pump", "pump", "valve"]))
    write_report(tmp_path, name="demo", version="v1", report=report)
    text = (tmp_path / "report.md").read_text()
    assert "## Look-alikes" in text and "- valve: pump 50%" in text


def test_no_mistakes_no_pairs() -> None:
    same = np.array(["a", "b", "b"])
    assert confused_pairs(same, same) == []
    assert confused_pairs(np.array([]), np.array([])) == []


def _report() -> dict[str, Any]:
    truth = np.array(["hose", "pump", "pump", "valve", "valve"])
    predicted = np.array(["hose", "pump", "valve", "valve", "pump"])
    confidence = np.array([0.9, 0.8, 0.4, 0.7, 0.3])
    return {
        "images": 5,
        "products": 3,
        "product_threshold": 0.5,
        "target_precision": 0.9,
        "cv_evaluation": evaluation(truth, predicted, confidence, np.array(["hose", "pump", "valve"])),
        "confused_pairs": confused_pairs(truth, predicted),
    }


def test_write_report_with_open_set_figures(tmp_path: Path) -> None:
    report = _report()
    report["open_set"] = open_set_curve(NOVELTY, UNSEEN, CORRECT, 0.5)
    report["open_set_by_product"] = open_set_by_product(NOVELTY, PRODUCTS, UNSEEN, CORRECT, 0.5)
    written = write_report(tmp_path, name="demo", version="v1", report=report)
    assert written == [*REPORT_FILES, "open_set.png"]
    assert all((tmp_path / name).is_file() for name in written)
    from PIL import Image

    with Image.open(tmp_path / "open_set.png") as png:
        assert png.format == "PNG" and png.size[0] > 300
    page = (tmp_path / "report.md").read_text()
    assert "## Open set" in page and "AUROC 0.875" in page and "![open set](open_set.png)" in page
    assert "never-seen refused 100.0%, known answered right 50.0%, known refused 25.0%" in page
    assert "| hose | 2 | 100.0% | 0 | 0.0% | 0.0% |" in page and "| pump | 0 | 0.0% | 3 | 66.7% | 33.3% |" in page
    assert "## Most confused" in page and "- pump / valve: 2 (pump as valve: 1, valve as pump: 1)" in page
    assert json.loads((tmp_path / "report.json").read_text())["open_set"]["auroc"] == 0.875


def test_write_report_without_open_set_writes_the_fixed_files_only(tmp_path: Path) -> None:
    report = _report()
    del report["confused_pairs"]
    assert write_report(tmp_path, name="demo", version="v1", report=report) == list(REPORT_FILES)
    assert not (tmp_path / "open_set.png").exists()
    page = (tmp_path / "report.md").read_text()
    assert "Open set" not in page and "Most confused" not in page


@pytest.mark.parametrize("unseen", [np.zeros(6, dtype=bool), np.ones(6, dtype=bool)])
def test_write_report_with_one_group_only_says_auroc_is_not_available(tmp_path: Path, unseen: np.ndarray) -> None:
    report = _report()
    report["open_set"] = open_set_curve(NOVELTY, unseen, CORRECT, 0.5)
    assert "open_set.png" in write_report(tmp_path, name="demo", version="v1", report=report)
    assert "AUROC n/a" in (tmp_path / "report.md").read_text()


def test_a_confusion_matrix_of_many_products_keeps_those_most_often_confused(tmp_path: Path) -> None:
    from models.train.report import CONFUSION_PRODUCTS, confusion

    labels = [f"part-{i:04d}" for i in range(1000)]
    truth = np.repeat(np.asarray(labels), 3)
    predicted = truth.copy()
    predicted[0] = "part-0001"  # part-0000 answered as part-0001 once
    predicted[30:33] = "part-0500"  # part-0010's three photos answered as part-0500
    shown = confusion(truth, predicted, labels)
    assert shown["products"] == 1000
    assert shown["labels"] == ["part-0000", "part-0001", "part-0010", "part-0500"]  # the confused ones alone
    matrix = np.asarray(shown["matrix"])
    assert matrix.shape == (4, 4)
    predicted[::7] = "part-0999"  # many mistaken: at most CONFUSION_PRODUCTS kept
    assert len(confusion(truth, predicted, labels)["labels"]) == CONFUSION_PRODUCTS
    at = {name: i for i, name in enumerate(shown["labels"])}
    assert matrix[at["part-0010"], at["part-0500"]] == 3 and matrix[at["part-0000"], at["part-0001"]] == 1
    assert confusion(truth, truth, labels)["labels"] == labels[:CONFUSION_PRODUCTS]  # none mistaken
    report = {
        "images": 3000,
        "products": 1000,
        "product_threshold": 0.5,
        "target_precision": 0.9,
        "cv_evaluation": evaluation(truth, predicted, np.ones(len(truth)), np.asarray(labels)),
    }
    write_report(tmp_path, name="many", version="v1", report=report)  # the plot stays a readable size
    from PIL import Image

    with Image.open(tmp_path / "confusion_matrix.png") as plot:
        assert max(plot.size) < 3000
