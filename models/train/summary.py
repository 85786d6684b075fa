"""What `partsight train` tells the operator when it is done, from the version's report: how often the folds got the
product right, what the never-seen operating point refuses and what it costs the known photos, and, where it
refuses many of the answers the head gets right (look-alike products, which a hidden variant's siblings look just like),
the same folds at other operating points and what may help. Pure: the report in, lines out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OTHER_POINTS = (0.5, 0.95)  # the never-seen shares the trade-off line shows beside the shipped one
# the trade-off lines when the known photos answered right are under this share of those the same folds rank right
COSTLY_SHARE = 0.75


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The lines to print; none for what the report lacks (a model too small for folds has no open-set figures)."""
    lines: list[str] = []
    accuracy, category = report.get("cv_accuracy"), report.get("cv_category_accuracy")
    if isinstance(accuracy, int | float):
        where = f"{_count(report.get('images'))} photos of {_count(report.get('products'))} products"
        family = f", category right {category:.1%}" if isinstance(category, int | float) else ""
        lines.append(f"cross-validated on {where}: product ranked first right {accuracy:.1%}{family}")
    open_set = report.get("open_set")
    if not isinstance(open_set, Mapping) or "known_answered_right" not in open_set:
        return lines
    refuse = (report.get("novelty") or {}).get("refuse_unseen")
    auroc = open_set.get("auroc")
    right = float(open_set["known_answered_right"])
    lines.append(
        f"never-seen products (hidden in the folds; novelty AUROC {'n/a' if auroc is None else f'{auroc:.3f}'}): "
        f"'unknown' at --refuse-unseen {refuse if refuse is not None else '?'} refuses "
        f"{float(open_set['unseen_refused']):.1%} of them and answers {right:.1%} of known photos right "
        f"({float(open_set['known_refused']):.1%} refused)"
    )
    curve = open_set.get("curve") or []
    ranked_right = float(curve[0].get("known_answered_right", 0.0)) if curve else accuracy  # the folds, none refused
    if isinstance(ranked_right, int | float) and right < COSTLY_SHARE * ranked_right:
        lines += _trade_off(curve, tuning=report.get("tuning"))
    return lines


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _trade_off(curve: Sequence[Mapping[str, Any]], *, tuning: Mapping[str, Any] | None) -> list[str]:
    points = [(share, _known_right_at(curve, share)) for share in OTHER_POINTS]
    shown = ", ".join(f"--refuse-unseen {share}: {right:.1%} right" for share, right in points if right is not None)
    lines = [f"  the same folds at other operating points: {shown}"] if shown else []
    lines.append(
        "  many right answers are refused: where the products the folds hid look like known ones (look-alikes), "
        "refusing them refuses their siblings too. "
        + _tuning_advice(tuning)
        + "a lower --refuse-unseen answers more, and more never-seen products wrongly (docs/training.md)"
    )
    return lines


def _tuning_advice(tuning: Mapping[str, Any] | None) -> str:
    if tuning is None:
        return "`partsight train --tune` may tell them apart better; "
    return "" if tuning.get("kept") else "--tune was tried and not kept (its figures are in the report); "


def _known_right_at(curve: Sequence[Mapping[str, Any]], unseen_share: float) -> float | None:
    """Known photos answered right at the highest threshold of the curve that refuses `unseen_share` of the
    never-seen ones (the curve runs from the highest threshold, which refuses least, down); None when none does."""
    for point in curve:
        if float(point.get("unseen_refused", 0.0)) >= unseen_share:
            return float(point.get("known_answered_right", 0.0))
    return None
