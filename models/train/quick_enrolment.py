"""Quick enrolment: a product answerable at once, at a cost that depends on its photos and its look-alikes only.

The head's nodes stay as they were and gain one refinement (models.answer.refinements): a classifier over the new
product and the products its photos are confused with. Those are found where the frames' probability would go:
the head's likeliest products for each new photo, and the gallery's nearest products. The classifier is fitted on
the real photos of that group alone (a few hundred rows, whatever the catalog's size). The novelty score keeps its
weights and threshold (its inputs are relative to each product's own spread, which the gallery measures for the
new product); the share of the new photos it would refuse, each scored against the gallery without itself, is
reported as the check of that threshold. A consolidating refit (models.train.consolidation) folds the refinements
into the nodes later, in the background.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from models.answer.classifiers import fit_candidate
from models.answer.gallery import Gallery, top_rows
from models.answer.head import ProductHead
from models.answer.novelty import NoveltyModel, answered_index, novelty_inputs_of
from models.answer.refinements import Refinement
from models.train.enrolment_base import EnrolmentBase
from models.train.node_fitting import DEFAULT_CANDIDATE

GROUP_LIMIT = 24  # look-alikes a refinement shares a frame's probability with, at most
MASS_COVERED = 0.99  # of the head's probability for the new photos, held by the group (within GROUP_LIMIT)
GALLERY_CANDIDATES = 8  # the products nearest to the new photos (by the gallery) that join the group too
CONFUSABLE_SHARE = 0.10  # an enrolment names the products its photos are answered as more often than this
# the refinement's and the check's classifiers are small (a few hundred rows of up to 25 products): BLAS threads
# cost more than they give there (one fit at 1,000 parts: 0.65 s on two OpenBLAS threads, 0.18 s on one). A worker
# pins its pools to its lane already; `partsight enrol` does not.
FIT_THREADS = 1
NEIGHBOURS = 64  # each new photo's nearest gallery photos the checks read (the photo index's CANDIDATES)
SAME_PHOTO = 0.9999  # a similarity above it: the photo itself (or a copy of it), never its own match
CHECK_FOLDS = 3
CHECK_PHOTOS = 8  # of each look-alike, in the check's folds (a seeded sample): the check costs a second, not five


@dataclass(frozen=True)
class Neighbours:
    """Each new photo's NEIGHBOURS nearest photos of a gallery, best first, as a frame's search finds them: through
    the gallery's photo index where it has one, else by its exact scan, whose every similarity is kept."""

    rows: np.ndarray  # (photos, k) gallery rows, -1 where there are fewer
    similarities: np.ndarray  # (photos, k), -inf where there are fewer
    scanned: np.ndarray | None = None  # (photos, gallery rows): the exact scan's, where the gallery has no index


def gallery_neighbours(gallery: Gallery | None, vectors: np.ndarray) -> Neighbours | None:
    """The new photos' nearest photos of `gallery` (None: no gallery), as look_alikes and novelty_check both read
    them: one search (at 1,000 parts through the photo index: 3-4 ms, where the exact scan of 20,000 rows took 37)."""
    return None if gallery is None else _neighbours(gallery, vectors)


def _neighbours(gallery: Gallery, vectors: np.ndarray) -> Neighbours:
    x = _normalised(vectors)
    if gallery.search is not None:
        return Neighbours(*gallery.nearest(x, NEIGHBOURS))
    scanned = gallery.similarities(x)
    return Neighbours(*top_rows(scanned, NEIGHBOURS), scanned=scanned)


def look_alikes(
    head: ProductHead,
    gallery: Gallery | None,
    vectors: np.ndarray,
    product: str,
    neighbours: Neighbours | None = None,
) -> list[str]:
    """The products the new photos of `product` are most confused with, likeliest first (never `product`): those
    that hold the head's probability for them (until MASS_COVERED of it), and the gallery's nearest products
    (_nearest_products). `neighbours`: gallery_neighbours(gallery, vectors) where the caller has it."""
    probabilities = np.asarray(head.probabilities(vectors), dtype=np.float64)
    names = list(head.products)
    others = np.array([name != product for name in names])
    evidence = np.where(others, probabilities.mean(axis=0), 0.0)
    order = np.argsort(-evidence, kind="stable")
    covered = np.cumsum(evidence[order]) / max(float(evidence.sum()), 1e-12)
    chosen = order[: int(np.searchsorted(covered, MASS_COVERED)) + 1].tolist()
    if gallery is not None:
        found = _neighbours(gallery, vectors) if neighbours is None else neighbours
        nearest = _nearest_products(gallery, found, vectors, product)
        extra = [i for i in nearest if others[i] and i not in chosen]
        chosen = chosen[: GROUP_LIMIT - GALLERY_CANDIDATES] + extra[:GALLERY_CANDIDATES]
    return [names[i] for i in chosen[:GROUP_LIMIT] if others[i]]


def _nearest_products(gallery: Gallery, found: Neighbours, vectors: np.ndarray, product: str) -> list[int]:
    """Every product of the gallery by its best similarity to any new photo, best first (ties in product order).
    Through the photo index (a gallery of thousands of photos), for a new product, the products of the photos
    `found` alone, each by its best among them: a product whose photos lie past every new photo's 64 nearest is
    left out, and one found through a photo it is far from is ranked by that (at 1,000 look-alike parts, 10 of 15
    groups came out as by the scan, the others differed in 1-3 of their 24; ranking each product found by its own
    photos made that 11 of 15 for 11 ms). A known product's own photos would crowd out everything else, so its
    gallery is scanned, as one without an index is."""
    if found.scanned is None and product in gallery.products:
        found = replace(found, scanned=gallery.similarities(_normalised(vectors)))
    if found.scanned is not None:
        ranked: list[int] = np.argsort(-gallery.best_by_product(found.scanned).max(axis=0), kind="stable").tolist()
        return ranked
    valid = found.rows >= 0
    best = np.full(len(gallery.products), -np.inf)
    np.maximum.at(best, gallery.labels[found.rows[valid]], found.similarities[valid])
    order = np.argsort(-best, kind="stable")
    nearest: list[int] = order[np.isfinite(best[order])].tolist()
    return nearest


def _normalised(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    normalised: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return normalised


def refinement_for(
    base: EnrolmentBase, product: str, group: list[str], *, source: str, new: bool, seed: int
) -> Refinement:
    """The classifier over `product` and its `group`, fitted on their real photos among the rows."""
    classes = [*group, product]
    rows = ~base.synthetic & np.isin(base.products, classes)
    with threadpool_limits(limits=FIT_THREADS, user_api="blas"):
        classifier = fit_candidate(DEFAULT_CANDIDATE, base.features[rows], base.products[rows].tolist(), seed=seed)
    return Refinement(product, classifier, source, new)


def refine(
    head: ProductHead,
    base: EnrolmentBase,
    new: tuple[str, str],
    *,
    group: list[str],
    source: str,
    seed: int,
) -> tuple[ProductHead, dict[str, Any]]:
    """`head` with a refinement for `new` (the product and its category) over its look-alikes `group`
    (look_alikes), fitted on `base` (the rows of the group and of the product, its new photos with them), and what
    the report says of it."""
    product, category = new
    refinement = refinement_for(base, product, group, source=source, new=product not in head.products, seed=seed)
    refined = head.refined_by(refinement, category)
    return refined, {"quick": {"group": group, "refinements": len(refined.refinements)}}


def confusable_with(base: EnrolmentBase, product: str, group: list[str], *, seed: int) -> list[dict[str, float | str]]:
    """The products `product`'s photos are answered as in more than CONFUSABLE_SHARE of its fold answers, most
    often first: in each of up to CHECK_FOLDS folds, a refinement over `group` (CHECK_PHOTOS of each) and the
    product is fitted without that fold's photos of the product and answers them. Empty with fewer than two photos
    or no look-alike."""
    rng = np.random.default_rng(seed)
    real = ~base.synthetic
    rows = [np.flatnonzero(real & (base.products == product))]
    for other in group:
        theirs = np.flatnonzero(real & (base.products == other))
        rows.append(theirs if len(theirs) <= CHECK_PHOTOS else np.sort(rng.choice(theirs, CHECK_PHOTOS, replace=False)))
    chosen = np.concatenate(rows)
    x, y = base.features[chosen], base.products[chosen].astype(str)
    mine = np.flatnonzero(y == product)
    if len(mine) < 2 or not group:
        return []
    answers: list[str] = []
    with threadpool_limits(limits=FIT_THREADS, user_api="blas"):
        for held in np.array_split(rng.permutation(mine), min(CHECK_FOLDS, len(mine))):
            kept = np.ones(len(y), dtype=bool)
            kept[held] = False
            classifier = fit_candidate(DEFAULT_CANDIDATE, x[kept], y[kept].tolist(), seed=seed)
            answers += np.asarray(classifier.classes)[classifier.probabilities(x[held]).argmax(axis=1)].tolist()
    mistaken = Counter(answer for answer in answers if answer != product)
    return [
        {"product": other, "share": round(count / len(answers), 4)}
        for other, count in sorted(mistaken.items(), key=lambda item: (-item[1], item[0]))
        if count / len(answers) > CONFUSABLE_SHARE
    ]


def novelty_check(  # noqa: PLR0917
    head: ProductHead,
    before: Gallery | None,
    spread: Mapping[str, tuple[float, float]],
    novelty: NoveltyModel,
    vectors: np.ndarray,
    product: str,
    neighbours: Neighbours | None = None,
) -> Mapping[str, Any]:
    """The share of the new photos the kept novelty threshold refuses and the share answered as `product`, each
    photo scored as check_inputs says."""
    inputs, answered = check_inputs(head, before, spread, vectors, product, neighbours, distance=novelty.uses_distance)
    scores = novelty.score(inputs)
    right = answered == head.products.index(product)
    return {
        "photos": len(vectors),
        "refused": round(float((scores >= novelty.threshold).mean()), 4),
        "answered_right": round(float((right & (scores < novelty.threshold)).mean()), 4),
        "threshold": round(novelty.threshold, 6),
    }


def check_inputs(  # noqa: PLR0917
    head: ProductHead,
    before: Gallery | None,
    spread: Mapping[str, tuple[float, float]],
    vectors: np.ndarray,
    product: str,
    neighbours: Neighbours | None = None,
    *,
    distance: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The novelty score's inputs for each new photo of `product` and the head column it is answered as, the photo
    taken as a frame is (Answerer.novelty_of: its nearest photo's product, and its best similarity to the product it
    is answered as) against the gallery grown by the new photos, without itself or a copy of it. `before`: the
    gallery without them (the base version's, as loaded), `spread`: each of `head`'s products' spread with them,
    `neighbours`: gallery_neighbours(before, vectors) where the caller has it. The grown gallery is never built:
    each photo's nearest is the base gallery's or another new photo, whichever is nearer (a gallery of 20,000 rows
    copied and sorted again cost half a second at 1,000 parts). `distance`: the product distance too (else NaN),
    the new product's mean taken without the photo (ProductDensity.nearest_distance_with), in the base gallery's
    components and covariance: the version served refits them with the new photos in, a small change for one
    product among many, and copies among the new photos pull their mean nearer than the similarities let them."""
    x = _normalised(vectors)
    probabilities = head.probabilities(vectors)
    answered = answered_index(probabilities, head.categories)
    columns = {name: i for i, name in enumerate(head.products)}
    mine = columns[product]
    as_stored = np.asarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)  # as the gallery keeps them
    among_new = x @ as_stored.T
    among_new[among_new > SAME_PHOTO] = -np.inf  # itself and its copies
    nearest_new = among_new.max(axis=1) if len(x) > 1 else np.full(len(x), -np.inf)
    nearest, nearest_value = np.full(len(x), -1), np.full(len(x), -np.inf)
    similarity = np.full(len(x), -1.0)
    if before is not None and len(before.features):
        found = _neighbours(before, vectors) if neighbours is None else neighbours
        column_of = np.array([columns[name] for name in before.products])
        nearest, nearest_value = _nearest_not_itself(before, found, column_of)
        similarity = _best_not_itself(before, x, answered, column_of)
    nearest = np.where(nearest_new > nearest_value, mine, nearest)
    among_mine = np.maximum(similarity, np.where(np.isfinite(nearest_new), nearest_new, -1.0))
    similarity = np.where(answered == mine, among_mine, similarity)
    mean = np.array([spread[name][0] for name in head.products], dtype=np.float32)
    std = np.array([spread[name][1] for name in head.products], dtype=np.float32)
    density = before.density if distance and before is not None else None
    far = None if density is None else density.nearest_distance_with(as_stored)
    return novelty_inputs_of(probabilities, answered, similarity, nearest, mean, std, far), answered


def _nearest_not_itself(gallery: Gallery, found: Neighbours, column_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's nearest of the photos `found` that is not the photo itself (nor a copy): its product (as a
    column of the head, by `column_of`; -1: none) and similarity (-inf: none)."""
    if not found.rows.shape[1]:
        return np.full(len(found.rows), -1), np.full(len(found.rows), -np.inf)
    similarities = np.where((found.rows >= 0) & (found.similarities <= SAME_PHOTO), found.similarities, -np.inf)
    at, first = np.arange(len(similarities)), similarities.argmax(axis=1)
    value, row = similarities[at, first], found.rows[at, first]
    product = np.where(np.isfinite(value), column_of[gallery.labels[np.maximum(row, 0)]], -1)
    return product, value


def _best_not_itself(gallery: Gallery, x: np.ndarray, answered: np.ndarray, column_of: np.ndarray) -> np.ndarray:
    """Each photo's best similarity to a photo of the product it is answered as (a head column) other than itself
    or a copy of it, by a scan of that product's own photos; -1 where the gallery holds none."""
    rows_of = {int(column): label for label, column in enumerate(column_of.tolist())}
    best = np.full(len(x), -1.0)
    for i, column in enumerate(answered.tolist()):
        label = rows_of.get(int(column))
        if label is None:
            continue
        start, end = np.searchsorted(gallery.labels, [label, label + 1])
        values = gallery.features[start:end] @ x[i]
        values = values[values <= SAME_PHOTO]
        if len(values):
            best[i] = float(values.max())
    return best
