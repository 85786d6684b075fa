"""The training report: what cross-validation says of the model, as JSON, a Markdown page and PNG plots.

The numbers come from out-of-fold answers on the real photos (never their synthetic copies): accuracy,
macro-F1, a per-product table, the confusion matrix, and the precision/coverage trade-off of the
"unknown" threshold with the threshold the model ships with. Where products were hidden from the classifier,
the open-set figures too: how well the novelty score refuses never-seen products while known ones are still
answered right, per product, and the product pairs most often confused.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

MAX_CURVE_POINTS = 101
REPORT_FILES = ("report.json", "report.md", "confusion_matrix.png", "precision_coverage.png")
OPEN_SET_FILE = "open_set.png"  # written, besides REPORT_FILES, only when the report has an "open_set" entry


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
        "confusion": confusion(truth, predicted, labels),
        "precision_coverage": precision_coverage(confidence, truth == predicted),
    }


CONFUSION_PRODUCTS = 40  # past this many products, the confusion matrix keeps the products most often confused


def confusion(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The confusion matrix (rows: truth) over every product, or, past CONFUSION_PRODUCTS, over the products most
    often mistaken (as the truth or as the answer), in label order: a matrix of a thousand products would be a
    million numbers in report.json and a plot no one can read (it ran out of memory drawing it)."""
    shown = labels
    if len(labels) > CONFUSION_PRODUCTS:
        pairs = zip(np.asarray(truth).astype(str), np.asarray(predicted).astype(str), strict=True)
        mistakes = Counter(name for t, p in pairs if t != p for name in (t, p))
        worst = {
            name for name, _ in sorted(mistakes.items(), key=lambda item: (-item[1], item[0]))[:CONFUSION_PRODUCTS]
        }
        shown = [name for name in labels if name in worst] or labels[:CONFUSION_PRODUCTS]  # none mistaken: the first
    matrix = confusion_matrix(truth, predicted, labels=shown).tolist()
    return {"labels": shown, "matrix": matrix, "products": len(labels)}


def _share(count: float, total: int) -> float:
    """count / total rounded to 6 places; 0.0 for an empty total."""
    return round(float(count) / total, 6) if total else 0.0


def open_set_curve(novelty: np.ndarray, unseen: np.ndarray, correct: np.ndarray, threshold: float) -> dict[str, Any]:
    """How a novelty threshold (refuse "unknown" at novelty >= threshold) trades never-seen frames refused
    against known frames answered right: AUROC, the shipped point and the curve over distinct novelties.

    `correct` is ignored on unseen rows. Shares of an empty group are 0.0; AUROC is None with one group only.
    """
    novelty = np.asarray(novelty, dtype=float).ravel()
    unseen = np.asarray(unseen, dtype=bool).ravel()
    right = np.asarray(correct, dtype=bool).ravel() & ~unseen
    n_unseen, n_known = int(unseen.sum()), int((~unseen).sum())
    refused = novelty >= threshold
    auroc = round(float(roc_auc_score(unseen, novelty)), 6) if n_unseen and n_known else None

    order = np.argsort(-novelty, kind="stable")
    values = novelty[order]
    refused_unseen = np.cumsum(unseen[order])  # unseen rows at or above each row's novelty
    refused_right = np.cumsum(right[order])
    last_of_value = np.flatnonzero(np.append(values[1:] < values[:-1], True)) if len(values) else np.arange(0)
    if len(last_of_value) > MAX_CURVE_POINTS:
        last_of_value = last_of_value[np.linspace(0, len(last_of_value) - 1, MAX_CURVE_POINTS).astype(int)]
    total_right = int(right.sum())
    curve = [
        {
            "threshold": round(float(values[i]), 6),
            "unseen_refused": _share(refused_unseen[i], n_unseen),
            "known_answered_right": _share(total_right - refused_right[i], n_known),
        }
        for i in last_of_value
    ]
    return {
        "auroc": auroc,
        "threshold": float(threshold),
        "unseen_refused": _share(np.sum(refused & unseen), n_unseen),
        "known_answered_right": _share(np.sum(~refused & right), n_known),
        "known_refused": _share(np.sum(refused & ~unseen), n_known),
        "unseen_frames": n_unseen,
        "known_frames": n_known,
        "curve": curve,
    }


def open_set_by_product(
    novelty: np.ndarray, products: np.ndarray, unseen: np.ndarray, correct: np.ndarray, threshold: float
) -> list[dict[str, Any]]:
    """Per true product, sorted by name: on the frames where it was hidden from the classifier (never seen),
    the share refused; on the frames where it was known, the shares answered right and refused."""
    novelty = np.asarray(novelty, dtype=float).ravel()
    products = np.asarray(products).astype(str).ravel()
    unseen = np.asarray(unseen, dtype=bool).ravel()
    right = np.asarray(correct, dtype=bool).ravel()
    refused = novelty >= threshold
    rows = []
    for product in sorted(set(products.tolist())):
        hidden = (products == product) & unseen
        known = (products == product) & ~unseen
        rows.append(
            {
                "product": product,
                "never_seen_frames": int(hidden.sum()),
                "refused_when_never_seen": _share(np.sum(refused & hidden), int(hidden.sum())),
                "known_frames": int(known.sum()),
                "answered_right_when_known": _share(np.sum(~refused & right & known), int(known.sum())),
                "refused_when_known": _share(np.sum(refused & known), int(known.sum())),
            }
        )
    return rows


def confused_pairs(truth: np.ndarray, predicted: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
    """The `top` product pairs most often mistaken for each other, both directions counted together;
    largest count first, ties by name."""
    answers = zip(np.asarray(truth).astype(str).ravel(), np.asarray(predicted).astype(str).ravel(), strict=True)
    mistakes = Counter((str(t), str(p)) for t, p in answers if t != p)
    rows: list[dict[str, Any]] = []
    for a, b in sorted({(min(t, p), max(t, p)) for t, p in mistakes}):
        count = mistakes[a, b] + mistakes[b, a]
        rows.append({"products": [a, b], "count": count, "a_as_b": mistakes[a, b], "b_as_a": mistakes[b, a]})
    rows.sort(key=lambda row: -int(row["count"]))  # stable: ties stay in name order
    return rows[: max(top, 0)]


def confused_with(truth: np.ndarray, predicted: np.ndarray, top: int = 3) -> dict[str, list[dict[str, Any]]]:
    """For each product mistaken for another in the folds, the `top` products its photos were answered as, with
    the share of its fold answers each took; most mistaken product first, then by name."""
    answers = list(zip(np.asarray(truth).astype(str).ravel(), np.asarray(predicted).astype(str).ravel(), strict=True))
    totals = Counter(t for t, _ in answers)
    mistakes = Counter((t, p) for t, p in answers if t != p)
    by_product: dict[str, list[dict[str, Any]]] = {}
    for (product, answered), count in sorted(mistakes.items(), key=lambda item: (item[0][0], -item[1], item[0][1])):
        by_product.setdefault(product, []).append({"product": answered, "share": round(count / totals[product], 4)})
    worst_first = sorted(by_product, key=lambda product: (-sum(r["share"] for r in by_product[product]), product))
    return {product: by_product[product][:top] for product in worst_first}


LOOK_ALIKE_LINES = 40  # products in report.md's look-alikes list; report.json has them all


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    # imported here, not at the top: matplotlib is slow to import and only writing the plots needs it (an
    # enrolment on a worker imports this module too)
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _plot_confusion(path: Path, labels: list[str], matrix: np.ndarray, products: int) -> None:
    plt = _pyplot()
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
    title = "Confusion matrix (out-of-fold, real photos)"
    if products > len(labels):
        title += f"\nthe {len(labels)} products most often confused, of {products}"
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_curve(path: Path, curve: list[dict[str, float]], threshold: float, target: float) -> None:
    plt = _pyplot()
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


def _plot_open_set(path: Path, open_set: Mapping[str, Any]) -> None:
    plt = _pyplot()
    curve = open_set.get("curve", [])
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot([p["unseen_refused"] for p in curve], [p["known_answered_right"] for p in curve], marker=".", linewidth=1)
    shipped = (open_set["unseen_refused"], open_set["known_answered_right"])
    threshold = float(open_set["threshold"])
    axes.scatter([shipped[0]], [shipped[1]], color="red", zorder=3, label=f"shipped (novelty {threshold:.3f})")
    right_side = shipped[0] > 0.6  # below the point, clear of the curve; left of it near the right edge
    axes.annotate(
        f"novelty >= {threshold:.3f}",
        shipped,
        textcoords="offset points",
        xytext=(-8 if right_side else 8, -10),
        ha="right" if right_side else "left",
        va="top",
        fontsize=8,
        color="red",
    )
    axes.set_xlabel("never-seen frames refused ('unknown')")
    axes.set_ylabel("known frames answered right")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="lower left")
    auroc = open_set.get("auroc")
    axes.set_title(f"Open set: never-seen vs known (AUROC {'n/a' if auroc is None else f'{auroc:.3f}'})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _classifier_row(level: str, entry: Mapping[str, Any]) -> str:
    others = sorted(((score, label) for label, score in entry["candidates"].items() if label != entry["chosen"]))
    runner_up = f"{others[-1][1]} ({others[-1][0]:.3f})" if others else "-"
    return f"| {level} | {entry['chosen']} | {entry['cv_macro_f1']:.3f} | {runner_up} |"


def _open_set_lines(report: Mapping[str, Any]) -> list[str]:
    """The "Open set" and "Most confused" sections, each only when its numbers are in the report."""
    lines: list[str] = []
    open_set = report.get("open_set")
    if open_set is not None:
        auroc = open_set.get("auroc")
        lines += [
            "## Open set",
            "",
            f"- never-seen products told from known ones by novelty: AUROC "
            f"{'n/a' if auroc is None else f'{auroc:.3f}'} ({open_set['unseen_frames']} never-seen frames, "
            f"{open_set['known_frames']} known)",
            f"- shipped 'unknown' at novelty {float(open_set['threshold']):.3f}: never-seen refused "
            f"{open_set['unseen_refused']:.1%}, known answered right {open_set['known_answered_right']:.1%}, "
            f"known refused {open_set['known_refused']:.1%}",
            "",
            "![open set](open_set.png)",
            "",
        ]
        by_product = report.get("open_set_by_product")
        if by_product:
            lines += [
                "| product | frames never seen | refused | frames known | answered right | refused |",
                "| --- | --- | --- | --- | --- | --- |",
                *[
                    f"| {r['product']} | {r['never_seen_frames']} | {r['refused_when_never_seen']:.1%} "
                    f"| {r['known_frames']} | {r['answered_right_when_known']:.1%} | {r['refused_when_known']:.1%} |"
                    for r in by_product
                ],
                "",
            ]
    look_alikes = report.get("look_alikes")
    if look_alikes:
        lines += ["## Look-alikes", "", "Each product's photos answered as another in the folds, and the share:", ""]
        lines += [
            f"- {product}: " + ", ".join(f"{r['product']} {r['share']:.0%}" for r in rows)
            for product, rows in list(look_alikes.items())[:LOOK_ALIKE_LINES]
        ]
        if len(look_alikes) > LOOK_ALIKE_LINES:
            lines.append(f"- and {len(look_alikes) - LOOK_ALIKE_LINES} more products (report.json, `look_alikes`)")
        lines.append("")
    pairs = report.get("confused_pairs")
    if pairs is not None:
        lines += ["## Most confused", ""]
        lines += [
            f"- {a} / {b}: {p['count']} ({a} as {b}: {p['a_as_b']}, {b} as {a}: {p['b_as_a']})"
            for p in pairs
            for a, b in [p["products"]]
        ] or ["- no product mistaken for another"]
        lines.append("")
    return lines


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
        *_open_set_lines(report),
    ]
    return "\n".join(lines)


def write_report(folder: Path, *, name: str, version: str, report: Mapping[str, Any]) -> list[str]:
    """Write REPORT_FILES into `folder` (a model version being staged), and OPEN_SET_FILE when the report
    has an "open_set" entry; returns the names written."""
    if "cv_evaluation" not in report:  # too few photos to cross-validate, or an enrolment (no search)
        (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if report.get("open_set") is not None:
            _plot_open_set(folder / OPEN_SET_FILE, report["open_set"])
            return ["report.json", OPEN_SET_FILE]
        return ["report.json"]
    cv = report["cv_evaluation"]
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(_markdown(name, version, report), encoding="utf-8")
    shown = cv["confusion"]
    matrix = np.asarray(shown["matrix"], dtype=np.int64).reshape(len(shown["labels"]), len(shown["labels"]))
    _plot_confusion(folder / "confusion_matrix.png", shown["labels"], matrix, int(shown.get("products", 0)))
    _plot_curve(
        folder / "precision_coverage.png",
        cv["precision_coverage"],
        float(report["product_threshold"]),
        float(report["target_precision"]),
    )
    written = list(REPORT_FILES)
    if report.get("open_set") is not None:
        _plot_open_set(folder / OPEN_SET_FILE, report["open_set"])
        written.append(OPEN_SET_FILE)
    return written
