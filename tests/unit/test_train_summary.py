"""What `partsight train` prints when it is done (models.train.summary): pure, from a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.train.summary import summary_lines


def report(*, top1: float, right: float, tuned: bool = False) -> dict[str, Any]:
    curve = [
        {"threshold": 0.9, "unseen_refused": 0.1, "known_answered_right": top1},
        {"threshold": 0.6, "unseen_refused": 0.5, "known_answered_right": 0.6 * top1},
        {"threshold": 0.4, "unseen_refused": 0.8, "known_answered_right": right},
        {"threshold": 0.2, "unseen_refused": 0.96, "known_answered_right": 0.02},
    ]
    open_set = {"auroc": 0.55, "threshold": 0.4, "unseen_refused": 0.8, "known_answered_right": right}
    return {
        "cv_accuracy": top1,
        "cv_category_accuracy": 0.99,
        "images": 2000,
        "products": 100,
        "novelty": {"refuse_unseen": 0.8},
        "open_set": {**open_set, "known_refused": 1 - right - 0.01, "curve": curve},
        **({"tuning": {"kept": True}} if tuned else {}),
    }


def test_a_costly_operating_point_is_shown_with_the_same_folds_elsewhere_and_what_may_help() -> None:
    lines = summary_lines(report(top1=0.645, right=0.12))

    assert (
        lines[0]
        == "cross-validated on 2,000 photos of 100 products: product ranked first right 64.5%, category right 99.0%"
    )
    assert "refuses 80.0% of them and answers 12.0% of known photos right" in lines[1] and "AUROC 0.550" in lines[1]
    assert "--refuse-unseen 0.5: 38.7% right, --refuse-unseen 0.95: 2.0% right" in lines[2]
    assert "--tune" in lines[3]
    assert "--tune" not in summary_lines(report(top1=0.645, right=0.12, tuned=True))[-1]  # tuned already
    untuned = {**report(top1=0.645, right=0.12), "tuning": {"kept": False}}
    assert "--tune was tried and not kept" in summary_lines(untuned)[-1]


def test_an_operating_point_that_keeps_most_right_answers_gets_no_advice() -> None:
    lines = summary_lines(report(top1=0.95, right=0.9))

    assert len(lines) == 2 and "answers 90.0% of known photos right" in lines[1]


def test_a_report_without_folds_says_what_it_has() -> None:
    assert summary_lines({}) == []
    assert summary_lines({"cv_accuracy": 1.0, "images": 6, "products": 2}) == [
        "cross-validated on 6 photos of 2 products: product ranked first right 100.0%"
    ]


def test_train_prints_the_summary_of_the_version_it_wrote(
    model_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.store.versions import resolve
    from partsight.cli import _print_summary

    version = resolve(model_store)
    _print_summary(version)
    out = capsys.readouterr().out.splitlines()

    assert out[0].startswith("cross-validated on ") and out[1].startswith("never-seen products (hidden in the folds")
    assert out[-1] == f"the whole report: {version / 'report.md'}"
    _print_summary(version / "gone")
    assert "the training report could not be read" in capsys.readouterr().err
