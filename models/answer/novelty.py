"""The novelty score: how unlike every enrolled product a frame looks, fitted on frames of products it never saw
and, where the folds answer at least half the known frames right, on the known ones they answered wrong.

Its inputs, per frame, combine the head with the gallery: the head's confidence in the product it answers and
its margin over the runner-up, the similarity to the nearest enrolled photo of that product, the same
relative to that product's own spread (how close its photos come to each other), and whether the gallery's
nearest product is the head's answer. A logistic regression maps them to 0..1; it is fitted at training
time on leave-products-out folds (models.train.trainer), where whole products are hidden, so their frames are
real never-seen frames; the known frames the folds' heads answered wrong are fitted as frames to refuse too
where they are no more than the right ones (fit_novelty). The operating point is a setting a plant understands:
refuse at least `refuse_unseen` of never-seen products; the threshold that does so on those folds ships in the
manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.answer.classifiers import sigmoid
from models.answer.head import category_codes, category_mass
from models.errors import InvalidModel, TrainingError

INPUTS = ("confidence", "margin", "similarity", "similarity_z", "gallery_agrees")
DISTANCE = "product_distance"  # models.answer.density: fitted in where it tells the folds' frames apart better
ALL_INPUTS = (*INPUTS, DISTANCE)
DEFAULT_REFUSE_UNSEEN = 0.8
MIN_RIGHT = 5  # known frames answered right, fewest for fit_novelty to fit the wrong answers against them (and
# never fewer than the wrong ones)


def answered_index(probabilities: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """(N,) the product each row is answered as: the best product of the most likely category (ties go to the
    category first in head order, then to the first product, the way ProductHead.decide breaks them)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    codes = category_codes(tuple(categories))
    mass = category_mass(probs, codes)
    best_category = mass.argmax(axis=1)
    result: np.ndarray = np.where(codes[None, :] == best_category[:, None], probs, -1.0).argmax(axis=1)
    return result


def novelty_inputs(  # noqa: PLR0917
    probabilities: np.ndarray,
    best_similarity: np.ndarray,
    answered: np.ndarray,
    spread_mean: np.ndarray,
    spread_std: np.ndarray,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """(N, len(ALL_INPUTS)) the score's inputs; `best_similarity` (N, P) is each product's nearest gallery photo."""
    best = np.asarray(best_similarity, dtype=np.float64)
    similarity = best[np.arange(len(best)), answered]
    return novelty_inputs_of(
        probabilities, answered, similarity, best.argmax(axis=1), spread_mean, spread_std, distance
    )


def novelty_inputs_of(  # noqa: PLR0917
    probabilities: np.ndarray,
    answered: np.ndarray,
    similarity: np.ndarray,
    nearest_product: np.ndarray,
    spread_mean: np.ndarray,
    spread_std: np.ndarray,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """(N, len(ALL_INPUTS)) the score's inputs from each row's similarity to the answered product's nearest photo,
    the product of its nearest photo of all (-1: none) and its distance to the nearest product's mean
    (ProductDensity.nearest_distance; None: the gallery has no density, and the column is NaN)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    rows = np.arange(len(probs))
    confidence = probs[rows, answered]
    if probs.shape[1] > 1:
        top_two = np.partition(probs, -2, axis=1)[:, -2:]  # the runner-up, then the best
        margin = top_two[:, 1] - top_two[:, 0]
    else:
        margin = probs[:, 0]
    similarity = np.asarray(similarity, dtype=np.float64)
    z = (similarity - spread_mean[answered]) / spread_std[answered]
    agrees = (np.asarray(nearest_product) == answered).astype(np.float64)
    far = np.full(len(probs), np.nan) if distance is None else np.clip(np.asarray(distance, dtype=np.float64), -20, 20)
    return np.stack([confidence, margin, similarity, np.clip(z, -10, 10), agrees, far], axis=1)


@dataclass(frozen=True)
class NoveltyModel:
    weights: np.ndarray  # (len(inputs),) on the raw inputs
    bias: float
    threshold: float  # refuse at or above
    refuse_unseen: float  # the operating point it was chosen for
    # the objects' operating point: the threshold on the mean novelty of 2, 3, ... agreeing frames of one part
    # (models.answer.object_rule); () for a version trained before objects: every object uses `threshold`
    object_thresholds: tuple[float, ...] = ()
    inputs: tuple[str, ...] = INPUTS  # INPUTS, or ALL_INPUTS where the product distance was fitted in

    @property
    def uses_distance(self) -> bool:
        return DISTANCE in self.inputs

    def score(self, inputs: np.ndarray) -> np.ndarray:
        """The score of rows of inputs: ALL_INPUTS' columns (those it uses are taken), or its own inputs'."""
        x = np.asarray(inputs, dtype=np.float64)
        if x.shape[1] == len(ALL_INPUTS) and len(self.inputs) != len(ALL_INPUTS):
            x = x[:, [ALL_INPUTS.index(name) for name in self.inputs]]
        if x.shape[1] != len(self.inputs):
            raise ValueError(f"{x.shape[1]} novelty inputs for a score of {len(self.inputs)}")
        if self.uses_distance and not np.isfinite(x[:, -1]).all():  # a caller that computed no distance: a bug
            raise ValueError("a novelty score of the product distance, scored without the distance")
        result: np.ndarray = sigmoid(x @ self.weights + self.bias)
        return result

    def record(self) -> dict[str, Any]:
        return {
            "inputs": list(self.inputs),
            "weights": [float(w) for w in self.weights],
            "bias": float(self.bias),
            "threshold": float(self.threshold),
            "refuse_unseen": float(self.refuse_unseen),
            **({"object_thresholds": [float(t) for t in self.object_thresholds]} if self.object_thresholds else {}),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NoveltyModel:
        """The score from its manifest record; InvalidModel when the record is not one."""
        try:
            inputs = list(record["inputs"])
            weights = np.asarray(record["weights"], dtype=np.float64)
            scalars = float(record["bias"]), float(record["threshold"]), float(record["refuse_unseen"])
        except (KeyError, TypeError, ValueError) as exc:  # a key missing, or a value that is not a number
            raise InvalidModel(f"a novelty record without its inputs, weights, bias or threshold: {exc!r}") from exc
        if inputs not in (list(INPUTS), list(ALL_INPUTS)):
            raise InvalidModel(f"novelty inputs {inputs!r} are neither {list(INPUTS)!r} nor {list(ALL_INPUTS)!r}")
        if weights.shape != (len(inputs),) or not np.isfinite(weights).all():
            raise InvalidModel("novelty weights do not fit its inputs")
        thresholds = _object_thresholds(record.get("object_thresholds", []))
        return cls(weights, *scalars, object_thresholds=thresholds, inputs=tuple(inputs))


def _object_thresholds(raw: Any) -> tuple[float, ...]:
    try:
        thresholds = tuple(float(t) for t in raw)
    except (TypeError, ValueError) as exc:
        raise InvalidModel(f"novelty object_thresholds are not numbers: {exc!r}") from exc
    if not all(0.0 <= t <= 1.0 for t in thresholds):
        raise InvalidModel("novelty object_thresholds must each be in [0, 1]")
    return thresholds


def threshold_for(scores: np.ndarray, refuse_share: float) -> float:
    """The highest threshold that refuses (score >= threshold) at least `refuse_share` of `scores`."""
    if len(scores) == 0:
        return 1.0
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    needed = max(1, int(np.ceil(refuse_share * len(ordered) - 1e-9)))
    return float(ordered[min(needed, len(ordered)) - 1])


def check_refuse_unseen(refuse_unseen: float) -> None:
    """TrainingError unless the share of never-seen frames to refuse is in (0, 1] (a setting, or a manifest's)."""
    if not 0.0 < refuse_unseen <= 1.0:
        raise TrainingError(f"the share of never-seen frames to refuse must be in (0, 1], got {refuse_unseen}")


def fit_novelty(
    inputs: np.ndarray,
    unseen: np.ndarray,
    refuse_unseen: float = DEFAULT_REFUSE_UNSEEN,
    *,
    answered_right: np.ndarray | None = None,
    use: tuple[str, ...] = INPUTS,
) -> NoveltyModel:
    """A balanced logistic regression of the frames to refuse against the others, and the threshold that refuses
    at least `refuse_unseen` of the never-seen ones.

    The frames to refuse are the never-seen ones and, where `answered_right` says which frames the head answered
    with their own product, the known frames it answered wrong as well: every answer the score lets through is
    then one the folds would have got right, so at the same share of never-seen frames refused it lets fewer wrong
    answers through (on look-alike parts' folds: 4.6% of known frames answered wrong against 7.9%, and 20.9% right
    against 15.4%; docs/performance.md). The never-seen frames alone are fitted where the folds' heads answer fewer
    known frames right than wrong, or fewer than MIN_RIGHT right: the wrong answers would be most of what it learns,
    and the score would tell a sure answer from an unsure one, not a never-seen product from a known one (at 1,000
    look-alike parts, about a quarter of the folds' answers right, it refused 64.5% of never-seen photos of another
    day against 85.5% fitted on the never-seen frames alone, 80% promised). The threshold is set on the never-seen
    frames alone: the promise a plant reads stays the same. `use`: the inputs fitted (INPUTS or ALL_INPUTS), of
    `inputs`' columns (ALL_INPUTS', or INPUTS' alone)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415  # training only: workers score with numpy

    check_refuse_unseen(refuse_unseen)
    x = np.asarray(inputs, dtype=np.float64)
    if x.shape[1] == len(ALL_INPUTS) and len(use) != len(ALL_INPUTS):
        x = x[:, [ALL_INPUTS.index(name) for name in use]]
    if x.shape[1] != len(use) or not np.isfinite(x).all():
        raise TrainingError(f"the novelty inputs {list(use)} are not all in the frames' inputs")
    y = np.asarray(unseen, dtype=bool)
    if y.all() or not y.any():
        raise TrainingError("fitting the novelty score needs both never-seen and known frames")
    refuse = y
    if answered_right is not None:
        right = np.asarray(answered_right, dtype=bool)
        if right.shape != y.shape:
            raise TrainingError(f"answered_right has shape {right.shape}, the frames {y.shape}")
        known_right, known_wrong = int((right & ~y).sum()), int((~right & ~y).sum())
        if known_right >= max(MIN_RIGHT, known_wrong):
            refuse = y | ~right
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit((x - mean) / scale, refuse)
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - (model.coef_[0] * mean / scale).sum())
    fitted = NoveltyModel(weights, bias, 1.0, refuse_unseen, inputs=tuple(use))
    return with_operating_point(fitted, fitted.score(x), y, refuse_unseen)


def with_operating_point(
    model: NoveltyModel, scores: np.ndarray, unseen: np.ndarray, refuse_unseen: float
) -> NoveltyModel:
    """`model` with the threshold that refuses at least `refuse_unseen` of the never-seen `scores`."""
    check_refuse_unseen(refuse_unseen)
    unseen = np.asarray(unseen, dtype=bool)
    threshold = into_the_gap(threshold_for(scores[unseen], refuse_unseen), scores[~unseen])
    return replace(model, threshold=threshold, refuse_unseen=refuse_unseen)


def into_the_gap(threshold: float, known_scores: np.ndarray) -> float:
    """The threshold lowered to the middle (in logit space) of the gap down to the highest known score below it.

    The folds' known frames refused stay the same, and a never-seen product farther from the enrolled ones
    than the hidden products were is not let through just because the folds separated cleanly."""
    below = np.asarray(known_scores, dtype=np.float64)
    below = below[below < threshold]
    if below.size == 0:
        return threshold
    middle = (logit(threshold) + logit(float(below.max()))) / 2
    return expit(middle)


def logit(p: float) -> float:
    """The log-odds of a score in (0, 1), clipped away from 0 and 1."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def expit(x: float) -> float:
    """The score whose log-odds are `x` (logit's inverse; the arrays' overflow-safe form is
    models.answer.classifiers.sigmoid)."""
    return float(1 / (1 + np.exp(-x)))
