"""The training report: what cross-validation says of the model, as JSON, a Markdown page and PNG plots.

The numbers come from out-of-fold answers on the real photos (never their synthetic copies): accuracy,
macro-F1, a per-product table, the confusion matrix, and the precision/coverage trade-off of the
"unknown" threshold with the threshold the model ships with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

MAX_CURVE_POINTS = 101
REPORT_FILES = ("report.json", "report.md", "confusion_matrix.png", "precision_coverage.png")


def precision_by_threshold(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, coverage, precision), highest threshold first, one entry per distinct confidence:
    accepting answers at or above a threshold answers `coverage` of them, right `precision` of the time.

    Only distinct confidences are cuts: accepting one answer at a value accepts all equal to it.
    """
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order].astype(float)
    answered = np.arange(1, len(conf) + 1)
    last_of_value = np.flatnonzero(np.append(conf[1:] < conf[:-1], True))
    precision = np.cumsum(hits) / answered
    return conf[last_of_value], answered[last_of_value] / len(conf), precision[last_of_value]


def precision_coverage(confidence: np.ndarray, correct: np.ndarray) -> list[dict[str, float]]:
    """For thresholds at the distinct confidences (at most MAX_CURVE_POINTS): share answered, and how often right."""
    thresholds, coverage, precision = precision_by_threshold(confidence, correct)
    picks = np.arange(len(thresholds))
    if len(picks) > MAX_CURVE_POINTS:
        picks = picks[np.linspace(0, len(picks) - 1, MAX_CURVE_POINTS).astype(int)]
    return [
        {
            "threshold": round(float(thresholds[i]), 6),
            "coverage": round(float(coverage[i]), 6),
            "precision": round(float(precision[i]), 6),
        }
        for i in picks
    ]


def evaluation(truth: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    """Per-product precision/recall/F1, the confusion matrix (rows: truth) and the precision/coverage curve.

    A product never answered has precision 0, one never shown recall 0 (scikit-learn's zero_division=0).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = classes.tolist()
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0.0)
    rows = [
        {
            "product": name,
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    ]
    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(float(np.mean([row["f1"] for row in rows])), 4),  # of the rounded F1s, as reported
        "per_product": rows,
        "confusion": {"labels": labels, "matrix": confusion_matrix(truth, predicted, labels=labels).tolist()},
        "precision_coverage": precision_coverage(confidence, truth == predicted),
    }


def _plot_confusion(path: Path, labels: list[str], matrix: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(5.5, 0.55 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("answered")
    axes.set_ylabel("true product")
    peak = matrix.max() or 1
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > peak / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    axes.set_title("Confusion matrix (out-of-fold, real photos)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_curve(path: Path, curve: list[dict[str, float]], threshold: float, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot([p["coverage"] for p in curve], [p["precision"] for p in curve], marker=".", linewidth=1)
    chosen = min(curve, key=lambda p: abs(p["threshold"] - threshold)) if curve else None
    if chosen:
        axes.scatter(
            [chosen["coverage"]], [chosen["precision"]], color="red", zorder=3, label=f"shipped ({threshold:.3f})"
        )
    axes.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target precision {target:.2f}")
    axes.set_xlabel("coverage (share of photos answered with a product)")
    axes.set_ylabel("precision of those answers")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="lower left")
    axes.set_title("Precision / coverage of the 'unknown' threshold")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _classifier_row(level: str, entry: Mapping[str, Any]) -> str:
    others = sorted(((score, label) for label, score in entry["candidates"].items() if label != entry["chosen"]))
    runner_up = f"{others[-1][1]} ({others[-1][0]:.3f})" if others else "-"
    return f"| {level} | {entry['chosen']} | {entry['cv_macro_f1']:.3f} | {runner_up} |"


def _markdown(name: str, version: str, report: Mapping[str, Any]) -> str:
    cv = report["cv_evaluation"]
    lines = [
        f"# Training report: {name} {version}",
        "",
        f"- photos: {report['images']} ({report.get('synthetic_images', 0)} synthetic copies), "
        f"products: {report['products']}",
        f"- cross-validated accuracy: {cv['accuracy']:.1%}, macro-F1: {cv['macro_f1']:.3f}, "
        f"category accuracy: {report.get('cv_category_accuracy', float('nan')):.1%}",
        f"- 'unknown' below product probability {report['product_threshold']:.3f} (target precision "
        f"{report['target_precision']:.2f}): {report.get('cv_coverage', float('nan')):.1%} of photos answered, "
        f"right {report.get('cv_precision_when_recognized') or float('nan'):.1%} of the time",
        f"- head structure: {report.get('structure', 'flat')}",
        "",
        "## Classifiers chosen by cross-validated macro-F1",
        "",
        "| level | chosen | macro-F1 | runner-up |",
        "| --- | --- | --- | --- |",
        *[_classifier_row(level, entry) for level, entry in report.get("classifiers", {}).items()],
        "",
        "## Per product",
        "",
        "| product | precision | recall | F1 | photos |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {r['product']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
            for r in cv["per_product"]
        ],
        "",
        "## Confusion matrix",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "## Precision and coverage",
        "",
        "![precision / coverage](precision_coverage.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(folder: Path, *, name: str, version: str, report: Mapping[str, Any]) -> list[str]:
    """Write REPORT_FILES into `folder` (a model version being staged); returns the names written."""
    if "cv_evaluation" not in report:
        (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return ["report.json"]  # too few photos per product to cross-validate: numbers only
    cv = report["cv_evaluation"]
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(_markdown(name, version, report), encoding="utf-8")
    _plot_confusion(folder / "confusion_matrix.png", cv["confusion"]["labels"], np.asarray(cv["confusion"]["matrix"]))
    _plot_curve(
        folder / "precision_coverage.png",
        cv["precision_coverage"],
        float(report["product_threshold"]),
        float(report["target_precision"]),
    )
    return list(REPORT_FILES)
