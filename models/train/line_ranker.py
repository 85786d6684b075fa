"""A line's own ranker (models.answer.line_scope): a classifier fitted on the training photos of the line's products
kept in the version's enrolment base, and the novelty threshold that keeps the version's operating point on the
line, in a second or two for a line of a few dozen products. A worker fits it when it first answers a line on a
version and never writes it anywhere.

The threshold: a line's frames are answered among a few dozen products, so they come out more confident than the
whole catalog's, and the version's threshold lets more never-seen frames through on a line. So the line's
products are hidden a fifth at a time (LINE_FOLDS), a ranker is fitted on the rest, the hidden products' photos
are answered on the line without them (real never-seen frames for it), and the threshold that refuses the
version's share of those (its `refuse_unseen`) is the line's.

Its classifier was chosen on two data sets, the ranking alone (top-1 among the line's products): a 20-part line of
1,000 look-alike parts (bench/scale.py) and a 4-product line of an 8-product Fashion-MNIST model. The head alone
ranked them 79.0% and 92.5%; a logistic regression (C=3) on PCA-reduced features 83.5% and 93.3%, as well as a
model trained on the line's products alone (83.5% and 92.9%). Standardised features did as well on the parts
(83.5%) but worse on Fashion-MNIST (87.9%); raw features the other way round (77.0% and 92.9%). Multiplying the
head's probabilities by the ranker's did not beat the ranker on both (82.2%, 93.8%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from models.answer.answerer import Answerer
from models.answer.classifiers import Candidate, Classifier, fit_candidate
from models.answer.line_scope import line_scope
from models.answer.novelty import threshold_for
from models.answer.row_shards import StoredRows
from models.bundle import ModelBundle
from models.train.enrolment import stored_base_of
from models.train.quick_enrolment import FIT_THREADS  # small fits on one BLAS thread, as an enrolment's

LINE_CANDIDATE = Candidate("logistic", 3.0, "pca")  # chosen on two data sets: module docstring
MAX_LINE_PRODUCTS = 500  # past this a line is answered by the head's ranking among its products (a fit takes long)
LINE_FOLDS = 5  # the line's products hidden a fifth at a time to calibrate its novelty threshold
CALIBRATE_FROM = 3  # products with photos a line needs for a threshold of its own (else the version's)
MIN_CALIBRATION_PHOTOS = 20  # hidden photos a line's threshold is chosen on, at the least


@dataclass(frozen=True)
class LineRanker:
    classifier: Classifier  # over the line's products with photos
    novelty_threshold: float | None  # the version's operating point on this line; None: the version's threshold


def fit_line_ranker(
    bundle: ModelBundle, products: Sequence[str], *, seed: int = 0, rows: StoredRows | None = None
) -> LineRanker | None:
    """The ranker of a line of `products` on `bundle`: a classifier over those with training photos in its
    enrolment base, fitted on those photos (not their synthetic copies), and the line's novelty threshold. None when
    fewer than two of them have photos or there are more than MAX_LINE_PRODUCTS. `rows`: the version's stored
    training rows when the caller has read them (else read here). EnrolmentError when the version keeps no base,
    ArtifactError when it is malformed."""
    wanted = _rankable(products)
    if wanted is None:
        return None
    stored = rows if rows is not None else stored_base_of(bundle)[0]
    columns = stored.columns
    on_line = stored.in_use & np.isin(columns["products"].astype(str), wanted) & ~columns["synthetic"].astype(bool)
    labels = columns["products"][on_line].astype(str)
    if len(np.unique(labels)) < 2:
        return None
    features = columns["features"][on_line].astype(np.float32)
    with threadpool_limits(limits=FIT_THREADS, user_api="blas"):
        classifier = fit_candidate(LINE_CANDIDATE, features, labels.tolist(), seed=seed)
        threshold = line_threshold(bundle, features, labels, seed=seed)
    return LineRanker(classifier, threshold)


def _rankable(products: Sequence[str]) -> list[str] | None:
    """The line's products, each once and in order, when a ranker can be fitted for that many (else None)."""
    wanted = sorted(set(products))
    return wanted if 2 <= len(wanted) <= MAX_LINE_PRODUCTS else None


def line_threshold(bundle: ModelBundle, features: np.ndarray, labels: np.ndarray, *, seed: int) -> float | None:
    """The novelty threshold that refuses the version's share of never-seen frames on a line of the products in
    `labels` (their photos' `features`): each fold's products hidden from the line and its ranker, their photos
    answered on it. It may be stricter or looser than the version's: it is the version's operating point measured on
    the line. None (the version's) for a version without a novelty score, a line of fewer than CALIBRATE_FROM
    products or fewer than MIN_CALIBRATION_PHOTOS photos to calibrate on."""
    names = np.unique(labels)
    if bundle.novelty is None or bundle.gallery is None or len(names) < CALIBRATE_FROM:
        return None
    answerer = Answerer(bundle.head, bundle.gallery, bundle.novelty)
    products = np.asarray(bundle.head.products)
    scores: list[float] = []
    order = np.random.default_rng(seed).permutation(names)
    for hidden in np.array_split(order, min(LINE_FOLDS, len(names))):
        held = np.isin(labels, hidden)
        kept = np.setdiff1d(names, hidden)
        ranker = None
        if len(kept) > 1:
            ranker = fit_candidate(LINE_CANDIDATE, features[~held], labels[~held].tolist(), seed=seed)
        scope = line_scope(bundle.head.products, np.isin(products, kept), ranker)
        decisions = answerer.answer(features[held], matches=1, allowed=[scope] * int(held.sum()))
        scores += [d.novelty for d in decisions if d.novelty is not None]
    if len(scores) < MIN_CALIBRATION_PHOTOS:
        return None
    return threshold_for(np.asarray(scores), bundle.novelty.refuse_unseen)


class LineRankerFits:
    """fit_line_ranker for a worker's fitting thread: a version's training rows read (and verified) once for the
    fits asked one after the other (a dozen lines after each enrolment read 76 MB of rows at 1,000 parts a dozen
    times), and forgotten by `release` when none is waiting."""

    def __init__(self) -> None:
        self._rows: tuple[str, StoredRows] | None = None

    def __call__(self, bundle: ModelBundle, products: Sequence[str]) -> LineRanker | None:
        if _rankable(products) is None:
            return None  # nothing to fit: no rows to read
        key = str(bundle.path)
        if self._rows is None or self._rows[0] != key:
            self._rows = None  # the last version's rows go before the next one's come
            self._rows = (key, stored_base_of(bundle)[0])
        return fit_line_ranker(bundle, products, rows=self._rows[1])

    def release(self) -> None:
        self._rows = None
