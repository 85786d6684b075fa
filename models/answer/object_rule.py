"""One decision from several frames of one physical part: the rule, pure (no numpy, no I/O).

Each frame votes for its head's best product (`top_k[0]`), whether its own answer named it or refused it, and
brings its novelty score. An object's answer is the product most of its frames vote for, when that product has a
strict majority of the frames and the mean novelty of the frames voting for it is under the object operating
point for that many agreeing frames (`ObjectRule.threshold`). The operating point for one frame is the
single-frame threshold; for more frames it is calibrated on the leave-products-out folds
(models.train.object_calibration), where the mean of several never-seen frames' scores is steadier than one.
A model without a novelty score counts only the frames whose own answer named a product, and one agreeing frame
decides no more than its own answer did.

An object is decided early once `agree` frames agree on a product its evidence accepts; otherwise when it
ends (its last frame, the gap after its last frame, `max_frames`, or for a grouped object its device's next
frame starting another), with its best answer or `unknown`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_AGREE = 3
DEFAULT_MAX_FRAMES = 10


@dataclass(frozen=True, slots=True)
class FrameVote:
    """What one frame brings to its object: small enough to keep in Redis beside the frames' ledger."""

    frame_id: str
    received_at: float
    product: str | None = None  # the head's best product (None: the frame could not be answered)
    category: str | None = None
    score: float = 0.0  # that product's probability
    novelty: float | None = None
    recognized: bool = False  # the frame's own answer named that product

    def record(self) -> dict[str, Any]:
        return {
            "f": self.frame_id,
            "t": self.received_at,
            "p": self.product,
            "c": self.category,
            "s": round(self.score, 6),
            "n": None if self.novelty is None else round(self.novelty, 6),
            "r": self.recognized,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FrameVote:
        """KeyError, TypeError or ValueError when the record is not one."""
        novelty = record.get("n")
        return cls(
            frame_id=str(record["f"]),
            received_at=float(record["t"]),
            product=None if record.get("p") is None else str(record["p"]),
            category=None if record.get("c") is None else str(record["c"]),
            score=float(record.get("s", 0.0)),
            novelty=None if novelty is None else float(novelty),
            recognized=bool(record.get("r", False)),
        )


@dataclass(frozen=True, slots=True)
class ObjectAnswer:
    product: str | None  # None: unknown
    category: str | None
    confidence: float  # the mean probability its agreeing frames gave the product
    novelty: float | None  # the mean novelty of its agreeing frames
    agreeing: int  # frames voting for the product answered (or, unknown, for the best candidate)
    frames: int


@dataclass(frozen=True, slots=True)
class ObjectRule:
    """The object operating point of one model version, and the service's settings."""

    single_threshold: float | None = None  # the novelty threshold of one frame; None: the model has no score
    more_thresholds: tuple[float, ...] = ()  # for 2, 3, ... agreeing frames (past the end: its last entry)
    agree: int = DEFAULT_AGREE
    max_frames: int = DEFAULT_MAX_FRAMES

    def threshold(self, agreeing: int) -> float | None:
        """The novelty at or above which `agreeing` frames' mean is refused."""
        if self.single_threshold is None:
            return None
        if agreeing <= 1 or not self.more_thresholds:
            return self.single_threshold
        return self.more_thresholds[min(agreeing - 2, len(self.more_thresholds) - 1)]


def best_answer(votes: Sequence[FrameVote], rule: ObjectRule) -> ObjectAnswer:
    """The object's answer from its frames so far: a product, or unknown (product None)."""
    counted = [
        vote for vote in votes if vote.product is not None and (rule.single_threshold is not None or vote.recognized)
    ]
    if not counted:
        return ObjectAnswer(None, _majority_category(votes), 0.0, _mean_novelty(votes), 0, len(votes))
    by_product: dict[str, list[FrameVote]] = {}
    for vote in counted:
        by_product.setdefault(str(vote.product), []).append(vote)
    product, voters = min(by_product.items(), key=lambda item: (-len(item[1]), _mean_novelty(item[1]) or 0.0, item[0]))
    confidence = sum(vote.score for vote in voters) / len(voters)
    novelty = _mean_novelty(voters)
    threshold = rule.threshold(len(voters))
    evidence = threshold is None or (novelty is not None and novelty < threshold)
    if len(voters) == 1:  # one frame decides no more than its own answer did (its confidence threshold too)
        evidence = voters[0].recognized
    accepted = 2 * len(voters) > len(votes) and evidence
    if not accepted:
        return ObjectAnswer(None, _majority_category(votes), confidence, novelty, len(voters), len(votes))
    return ObjectAnswer(product, voters[0].category, confidence, novelty, len(voters), len(votes))


def early_answer(votes: Sequence[FrameVote], rule: ObjectRule) -> ObjectAnswer | None:
    """The answer when `rule.agree` frames already agree on a product their evidence accepts; None: wait."""
    answer = best_answer(votes, rule)
    return answer if answer.product is not None and answer.agreeing >= rule.agree else None


def _mean_novelty(votes: Sequence[FrameVote]) -> float | None:
    scores = [vote.novelty for vote in votes if vote.novelty is not None]
    return sum(scores) / len(scores) if scores else None


def _majority_category(votes: Sequence[FrameVote]) -> str | None:
    """The category more than half the frames put first, else None."""
    counts = Counter(vote.category for vote in votes if vote.category is not None)
    if not counts:
        return None
    category, count = counts.most_common(1)[0]
    return category if 2 * count > len(votes) else None
