"""A line's own classifier (models.answer.line_scope's ranker): fitted on the training photos of the line's products
kept in the version's enrolment base, in well under a second for a line of a few dozen products, so a worker fits
it when it first answers a line on a version and never writes it anywhere.

Measured on the look-alike parts (bench/scale.py): a 20-part line of a 40-part model ranked its parts 78.8% right
with the mask alone, 83.0% with this classifier, and a model trained on those 20 alone 83.5%. Standardised
features matter: without them the same logistic regression ranked 77.8%.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from models.answer.classifiers import Candidate, Classifier, fit_candidate
from models.bundle import ModelBundle
from models.train.enrolment import stored_base_of

logger = logging.getLogger(__name__)

LINE_CANDIDATE = Candidate("logistic", 3.0, "standardize")
MAX_LINE_PRODUCTS = 500  # past this a line is answered by the head's ranking among its products (a fit takes long)
FIT_THREADS = 1  # BLAS threads: two made small logistic fits 3.5x slower on a 2-core box (quick_enrolment.py)


def fit_line_ranker(bundle: ModelBundle, products: Sequence[str], *, seed: int = 0) -> Classifier | None:
    """A classifier over those of `products` with training photos in `bundle`'s enrolment base, fitted on those
    photos (not their synthetic copies); None when fewer than two of them have photos or there are more than
    MAX_LINE_PRODUCTS. EnrolmentError when the version keeps no base, ArtifactError when it is malformed."""
    wanted = sorted(set(products))
    if len(wanted) < 2 or len(wanted) > MAX_LINE_PRODUCTS:
        return None
    stored, _ = stored_base_of(bundle)
    columns = stored.columns
    on_line = stored.in_use & np.isin(columns["products"].astype(str), wanted) & ~columns["synthetic"].astype(bool)
    labels = columns["products"][on_line].astype(str)
    if len(np.unique(labels)) < 2:
        return None
    with threadpool_limits(limits=FIT_THREADS, user_api="blas"):
        return fit_candidate(LINE_CANDIDATE, columns["features"][on_line].astype(np.float32), labels, seed=seed)
