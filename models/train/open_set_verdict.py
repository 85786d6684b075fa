"""Whether a tuned backbone keeps what the frozen one refuses: the tuning's open-set verdict.

The tuning (models.train.tuning) is kept when a probe on its folds answers more of the photos they held out right.
That says nothing of products the network never learned: cross-entropy on the catalog can pull a never-seen product
into the known one it resembles, and the novelty score then has nothing to refuse it on (measured on the digits: 72.6%
of never-seen frames refused frozen, 16.5% tuned). Each tuning fold's network never learned some products, so the
answer path that ships (a head, a gallery, the novelty score at the operating point asked for) is run on each fold's
features twice, the fold's tuned network's and the frozen backbone's, with the same hidden products and the same
held-out photos as known ones. The tuning is kept only where, at that operating point, the tuned network answers
more known photos right than the frozen one by the tuning's margin (as its top-1 must), where each refuses at least
the share of never-seen frames asked on the folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.answer.head import FLAT
from models.train.node_fitting import tuning_sample
from models.train.open_set import HiddenFold, fit_score, fold_answers
from models.train.report import open_set_curve

FIGURES = ("known_answered_right", "unseen_refused", "known_refused", "auroc")


def open_set_verdict(
    tuned: Sequence[HiddenFold],
    frozen: Sequence[HiddenFold],
    labels: np.ndarray,
    groups: np.ndarray,
    synthetic: np.ndarray,
    *,
    categories_of: Mapping[str, str],
    refuse_unseen: float,
    margin: float,
    seed: int,
    max_per_product: int,
    tuning_photos: int | None,
) -> dict[str, Any] | None:
    """The two networks' figures on the same folds at `refuse_unseen`, and whether the tuned one is kept; None when
    the folds cannot be scored: no fold given (or not as many of each), none hides a product among the rows sampled
    without leaving fewer than two, a product has a single photo, or no known photo is left to score.

    Both sides fit a flat head of the default classifier: the verdict compares the networks, not the search."""
    if not tuned or len(tuned) != len(frozen):
        return None
    labels = np.asarray(labels)
    categories = np.array([categories_of[str(product)] for product in labels])
    rows = tuning_sample(labels, groups, synthetic, tuning_photos, seed, categories)
    sampled = labels[rows]
    figures: dict[str, dict[str, Any]] = {}
    for name, folds in (("frozen", frozen), ("tuned", tuned)):
        answers = fold_answers(
            folds[0].features,  # unused: each fold scores on its own features
            sampled,
            groups[rows],
            synthetic[rows],
            categories_of=categories_of,
            structure=FLAT,
            chosen={},
            seed=seed,
            max_per_product=max_per_product,
            hidden_folds=[fold.sampled(rows) for fold in folds],
        )
        if answers is None or answers.unseen.all() or not answers.unseen.any():
            return None
        novelty = fit_score(answers, refuse_unseen)
        curve = open_set_curve(novelty.score(answers.inputs), answers.unseen, answers.correct, novelty.threshold)
        scored = sum(bool(len(np.intersect1d(fold.products, sampled))) for fold in folds)  # the others are skipped
        figures[name] = {key: curve[key] for key in FIGURES} | {"folds": scored}
    kept = figures["tuned"]["known_answered_right"] >= figures["frozen"]["known_answered_right"] + margin
    return {"refuse_unseen": refuse_unseen, "margin": margin, **figures, "kept": kept}


def why_not_kept(verdict: Mapping[str, Any]) -> str:
    """The record's reason, in a sentence, for a tuning the open set did not keep."""
    return (
        f"at the operating point (refuse {verdict['refuse_unseen']:.0%} of never-seen frames) on the folds' hidden "
        f"products, the tuned network answered {verdict['tuned']['known_answered_right']:.1%} of known photos right "
        f"against the frozen backbone's {verdict['frozen']['known_answered_right']:.1%} (margin {verdict['margin']})"
    )
