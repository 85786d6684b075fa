from __future__ import annotations

import numpy as np

from models.train.report import evaluation, precision_coverage


def test_evaluation_tables_from_out_of_fold_answers() -> None:
    truth = np.array(["valve", "valve", "valve", "pump", "pump", "hose"])
    predicted = np.array(["valve", "valve", "pump", "pump", "pump", "valve"])
    confidence = np.array([0.9, 0.8, 0.4, 0.95, 0.7, 0.3])
    result = evaluation(truth, predicted, confidence, np.array(["hose", "pump", "valve"]))
    assert result["accuracy"] == round(4 / 6, 4)
    rows = {row["product"]: row for row in result["per_product"]}
    assert rows["valve"] == {"product": "valve", "precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "support": 3}
    assert rows["hose"]["f1"] == 0.0 and rows["pump"]["recall"] == 1.0
    assert result["confusion"]["matrix"] == [[0, 0, 1], [0, 2, 0], [0, 1, 2]]  # rows: truth hose, pump, valve
    curve = result["precision_coverage"]
    assert curve[0] == {"threshold": 0.95, "coverage": round(1 / 6, 6), "precision": 1.0}
    assert curve[-1]["coverage"] == 1.0 and curve[-1]["precision"] == round(4 / 6, 6)
    assert [p["threshold"] for p in curve] == sorted((p["threshold"] for p in curve), reverse=True)


def test_the_curve_cuts_only_between_distinct_confidences_and_stays_small() -> None:
    curve = precision_coverage(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]))
    assert curve == [
        {"threshold": 0.9, "coverage": round(2 / 3, 6), "precision": 0.5},
        {"threshold": 0.5, "coverage": 1.0, "precision": round(2 / 3, 6)},
    ]
    many = precision_coverage(np.linspace(1, 0, 5000), np.ones(5000, dtype=bool))
    assert len(many) <= 101 and many[-1]["coverage"] == 1.0


def test_a_product_never_shown_nor_answered_scores_zero_without_warnings() -> None:
    import warnings

    truth = np.array(["pump", "valve", "valve"])
    predicted = np.array(["pump", "valve", "pump"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's UndefinedMetricWarning included
        result = evaluation(truth, predicted, np.array([0.9, 0.8, 0.4]), np.array(["hose", "pump", "valve"]))
    rows = {row["product"]: row for row in result["per_product"]}
    assert rows["hose"] == {"product": "hose", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rows["pump"] == {"product": "pump", "precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    assert result["macro_f1"] == round((0.0 + 0.6667 + 0.6667) / 3, 4)
    assert result["confusion"]["matrix"] == [[0, 0, 0], [0, 1, 0], [0, 1, 1]]
