"""The object operating point, calibrated on the leave-products-out folds as the single-frame one is.

Objects are drawn from the folds' scored frames: never-seen objects from the photos of one hidden product that
the fold heads put on the same wrong product (the dangerous case: frames that agree), known objects from the
held-out photos of one known product. For each count of agreeing frames m (2 up to the most frames an object
takes), the threshold on the mean novelty of m frames is set to refuse at least `refuse_objects` of the
never-seen objects of m frames. Photos of one product are more different from each other than frames of one
part are, so the folds see more of the averaging than a camera gives: the target is set higher than a single
frame's (95% against 80% by default), and `bench/objects.py` measures both kinds of stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.answer.novelty import threshold_for
from models.answer.object_rule import DEFAULT_MAX_FRAMES, FrameVote, ObjectRule, best_answer

DEFAULT_REFUSE_OBJECTS = 0.95
DRAWS = 400  # objects drawn per count of frames
MIN_CELLS = 5  # objects of m frames are drawn from at least this many products (else m keeps m - 1's threshold)
REPORT_FRAMES = 3


@dataclass(frozen=True)
class ObjectCalibration:
    more_thresholds: tuple[float, ...]  # for 2, 3, ... agreeing frames
    report: dict[str, Any]


def calibrate_objects(
    scores: np.ndarray,
    unseen: np.ndarray,
    products: np.ndarray,
    predicted: np.ndarray,
    single_threshold: float,
    *,
    refuse_objects: float = DEFAULT_REFUSE_OBJECTS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    seed: int = 0,
) -> ObjectCalibration:
    """The thresholds for 2..max_frames agreeing frames, and what they give on objects of REPORT_FRAMES frames."""
    rng = np.random.default_rng(seed)
    unseen = np.asarray(unseen, dtype=bool)
    hidden = np.flatnonzero(unseen)
    agreeing = _cells(products, predicted, hidden)
    by_product = _cells(products, np.zeros(len(products), dtype=np.int8), hidden)
    thresholds: list[float] = []
    last = single_threshold
    for frames in range(2, max_frames + 1):
        drawn = _draw(agreeing, frames, rng) or _draw(by_product, frames, rng)
        if drawn:
            last = threshold_for(np.array([scores[rows].mean() for rows in drawn]), refuse_objects)
        thresholds.append(float(last))
    rule = ObjectRule(single_threshold=single_threshold, more_thresholds=tuple(thresholds))
    report = {
        "refuse_objects": refuse_objects,
        "thresholds": [round(single_threshold, 6), *(round(t, 6) for t in thresholds)],
        "folds": simulated(scores, unseen, products, predicted, rule, frames=REPORT_FRAMES, seed=seed),
    }
    return ObjectCalibration(tuple(thresholds), report)


def simulated(
    scores: np.ndarray,
    unseen: np.ndarray,
    products: np.ndarray,
    predicted: np.ndarray,
    rule: ObjectRule,
    *,
    frames: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Objects of `frames` fold photos of one product each, known and never-seen, answered by `rule`."""
    rng = np.random.default_rng(seed + 1)
    figures: dict[str, Any] = {"frames": frames}
    for kind, rows in (("known", np.flatnonzero(~unseen)), ("unseen", np.flatnonzero(unseen))):
        cells = _cells(products, np.zeros(len(products), dtype=np.int8), rows)
        objects = _draw(cells, frames, rng)
        right = wrong = 0
        for drawn in objects:
            votes = [
                FrameVote(str(i), 0.0, str(predicted[i]), None, 1.0, float(scores[i]), True) for i in drawn.tolist()
            ]
            answer = best_answer(votes, rule)
            if answer.product is None:
                continue
            truth = str(products[drawn[0]])
            right += int(kind == "known" and answer.product == truth)
            wrong += int(kind == "unseen" or answer.product != truth)
        count = max(1, len(objects))
        figures[kind] = {
            "objects": len(objects),
            "right": round(right / count, 4),
            "wrong": round(wrong / count, 4),
            "unknown": round(1 - (right + wrong) / count, 4),
        }
    return figures


def _cells(products: np.ndarray, predicted: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """`rows` grouped by (true product, predicted product)."""
    if len(rows) == 0:
        return []
    keys = np.char.add(
        np.char.add(np.asarray(products[rows], dtype=str), "\x00"), np.asarray(predicted[rows], dtype=str)
    )
    order = np.argsort(keys, kind="stable")
    _, starts = np.unique(keys[order], return_index=True)
    return [rows[order[start:end]] for start, end in zip(starts, [*starts[1:], len(order)], strict=True)]


def _draw(cells: Sequence[np.ndarray], frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """DRAWS objects of `frames` rows, each from one cell large enough; none when fewer than MIN_CELLS are."""
    large = [cell for cell in cells if len(cell) >= frames]
    if len(large) < MIN_CELLS:
        return []
    picks = rng.integers(0, len(large), size=DRAWS)
    return [rng.choice(large[pick], size=frames, replace=False) for pick in picks]
