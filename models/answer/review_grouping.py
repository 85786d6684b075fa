"""The numbers behind the review queue's clusters (api.review_clusters): each item's kept vector read back, items of
one feature space grouped by average linkage on cosine similarity cut at the version's same-product similarity
(models.answer.same_product), and the frames of a cluster worth enrolling. numpy and scipy: the HTTP API loads this
module only where the model packages are installed (the worker image), never in the bridge image.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

MAX_DIM = 8192  # a feature vector longer than this is not one (1,904 today)
FALLBACK_SIMILARITY = 0.9  # a version too small to calibrate one (fewer than 10 pairs of photos of one product)


def vector_of(record: Mapping[str, Any]) -> tuple[str, np.ndarray, float | None] | None:
    """An item's (space, L2-normalised vector, same-product similarity); None without usable features (none kept,
    too large, not base64 float16 of its `dim`, not finite, or all zero). A similarity outside [-1, 1] is none."""
    kept = record.get("features")
    if not isinstance(kept, Mapping) or not isinstance(kept.get("space"), str):
        return None
    dim, text = kept.get("dim"), kept.get("float16")
    if not isinstance(dim, int) or not 0 < dim <= MAX_DIM or not isinstance(text, str) or len(text) > 4 * MAX_DIM:
        return None
    try:
        vector = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f2").astype(np.float32)
    except (binascii.Error, ValueError):
        return None
    norm = float(np.linalg.norm(vector)) if len(vector) == dim and np.isfinite(vector).all() else 0.0
    if not norm > 0:
        return None
    similarity = kept.get("same_product_similarity")
    calibrated = similarity if isinstance(similarity, float) and -1.0 <= similarity <= 1.0 else None
    return kept["space"], vector / norm, calibrated


def group_members(records: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Positions in `records` of each cluster's items."""
    spaces: dict[str, list[tuple[int, np.ndarray, float | None]]] = {}
    groups: list[list[int]] = []
    for position, record in enumerate(records):
        found = vector_of(record)
        if found is None:
            groups.append([position])
        else:
            spaces.setdefault(found[0], []).append((position, found[1], found[2]))
    for members in spaces.values():
        groups.extend(_cluster_space(members))
    return groups


def _cluster_space(members: list[tuple[int, np.ndarray, float | None]]) -> list[list[int]]:
    """Clusters of one feature space's items (position, vector, similarity); a vector of another size alone."""
    dim = Counter(len(vector) for _, vector, _ in members).most_common(1)[0][0]
    groups = [[position] for position, vector, _ in members if len(vector) != dim]  # a damaged record
    usable = [member for member in members if len(member[1]) == dim]
    if len(usable) == 1:
        return [*groups, [usable[0][0]]]
    calibrated = [similarity for _, _, similarity in usable if similarity is not None]
    threshold = float(np.median(calibrated)) if calibrated else FALLBACK_SIMILARITY
    rows = np.stack([vector for _, vector, _ in usable]).astype(np.float64)
    cut = fcluster(linkage(rows, method="average", metric="cosine"), t=max(1.0 - threshold, 0.0), criterion="distance")
    groups.extend([usable[i][0] for i in np.flatnonzero(cut == label)] for label in np.unique(cut))
    return groups


def enrol_choice(records: Sequence[Mapping[str, Any]], count: int) -> list[int] | None:
    """Positions of the frames worth enrolling: the most typical (closest to all the others), then each next the
    one least like those chosen, so a few photos cover the cluster's poses. None when not every frame has features
    of one space and size (api.review_clusters.enrol_choice then takes the newest)."""
    found = [vector_of(record) for record in records]
    vectors = [entry for entry in found if entry is not None]
    if len(vectors) < len(records) or len({(space, len(vector)) for space, vector, _ in vectors}) > 1:
        return None
    rows = np.stack([vector for _, vector, _ in vectors])
    similarity = rows @ rows.T
    chosen = [int(similarity.mean(axis=1).argmax())]
    while len(chosen) < min(count, len(rows)):
        closest = similarity[:, chosen].max(axis=1)
        closest[chosen] = np.inf
        chosen.append(int(closest.argmin()))
    return chosen
