"""The review queue grouped by look-alikes and by object: items whose frames are alike enough to be one product, or
are frames of one object (one physical part: its result's `object`, named by the device or grouped by the worker),
become one cluster.

Each item keeps its frame's features as the version that answered it computed them (worker.review_sink); the
grouping by features (models.answer.review_grouping: average linkage on cosine similarity, cut at the similarity
the version calibrated on its gallery) needs numpy and scipy, which the bridge image, where the API also runs, does
not carry: there `grouping()` raises GroupingUnavailable and the queue is grouped by object alone. An item without
features and without an object is a cluster of its own. Pure: records in, clusters out.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

ENROL_PHOTOS = 5  # labelling a cluster enrols at most this many of its frames: the most typical, then the most unlike


class GroupingUnavailable(Exception):
    """numpy and scipy (the worker's packages) are not installed where this API runs."""


def grouping() -> ModuleType:
    """models.answer.review_grouping, loaded by name so this package stays importable without numpy."""
    try:
        return importlib.import_module("models.answer.review_grouping")
    except ImportError as exc:
        raise GroupingUnavailable(f"grouping look-alikes needs numpy and scipy, not installed here: {exc}") from exc


def enrol_choice(records: Sequence[Mapping[str, Any]], count: int = ENROL_PHOTOS) -> list[int]:
    """Positions of the frames worth enrolling (review_grouping.enrol_choice); the newest without numpy or without
    features for every frame."""
    try:
        chosen: list[int] | None = grouping().enrol_choice(records, count)
    except GroupingUnavailable:
        chosen = None
    if chosen is None:
        return sorted(range(len(records)), key=lambda i: str(records[i].get("id")), reverse=True)[:count]
    return chosen


def best_guess(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The product most of the cluster's frames put first, with how many did and their mean score."""
    firsts: dict[str, list[float]] = {}
    for record in records:
        answer = record.get("answer")
        top = answer.get("top_k") if isinstance(answer, Mapping) else None
        if isinstance(top, list) and top and isinstance(top[0], Mapping) and isinstance(top[0].get("product"), str):
            score = top[0].get("score")
            firsts.setdefault(top[0]["product"], []).append(float(score) if isinstance(score, int | float) else 0.0)
    if not firsts:
        return None
    product, scores = max(firsts.items(), key=lambda entry: (len(entry[1]), sum(entry[1])))
    return {
        "product": product,
        "frames": len(scores),
        "share": round(len(scores) / len(records), 4),
        "mean_score": round(sum(scores) / len(scores), 4),
    }


def features_available() -> bool:
    """Whether items are grouped by their features here, besides by object."""
    try:
        grouping()
    except GroupingUnavailable:
        return False
    return True


def object_of(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(device, object) of an item's frame, when its result named an object."""
    answer = record.get("answer")
    name = answer.get("object") if isinstance(answer, Mapping) else None
    device = record.get("device")
    return (device, name) if isinstance(device, str) and isinstance(name, str) and name else None


def merged_by_object(records: Sequence[Mapping[str, Any]], groups: Sequence[Sequence[int]]) -> list[list[int]]:
    """`groups` (positions in `records`) with every two that hold frames of one object made one."""
    parent = list(range(len(groups)))

    def root(group: int) -> int:
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    first_with: dict[tuple[str, str], int] = {}
    for group, positions in enumerate(groups):
        for position in positions:
            key = object_of(records[position])
            if key is not None:
                parent[root(group)] = root(first_with.setdefault(key, group))
    merged: dict[int, list[int]] = {}
    for group, positions in enumerate(groups):
        merged.setdefault(root(group), []).extend(positions)
    return list(merged.values())


def clusters(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The clusters of `records` (item records, any order), largest first, then newest first. A cluster's id is its
    oldest item's (ids sort by time), so it stays while frames join it. Without numpy, by object alone."""
    try:
        by_features: list[list[int]] = grouping().group_members(records)
    except GroupingUnavailable:
        by_features = [[position] for position in range(len(records))]
    found: list[dict[str, Any]] = []
    for positions in merged_by_object(records, by_features):
        members = sorted((records[i] for i in positions), key=lambda record: str(record.get("id")), reverse=True)
        typical = enrol_choice(members)
        received = sorted(str(record.get("received_at") or "") for record in members)
        found.append(
            {
                "id": str(members[-1].get("id")),
                "size": len(members),
                "items": [str(record.get("id")) for record in members],
                "frame_ids": [str(record.get("frame_id")) for record in members],
                "representative": str(members[typical[0]].get("id")),
                "enrol": [str(members[i].get("id")) for i in typical],
                "best_guess": best_guess(members),
                "devices": sorted({str(record.get("device")) for record in members}),
                "first_received_at": received[0],
                "last_received_at": received[-1],
                "answer": members[typical[0]].get("answer"),
            }
        )
    found.sort(key=lambda cluster: str(cluster["items"][0]), reverse=True)  # newest first, then (stable) largest
    found.sort(key=lambda cluster: int(cluster["size"]), reverse=True)
    return found


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    """An item as the API shows it: its features' bulky vector left out (their space and size stay)."""
    shown = dict(record)
    kept = shown.get("features")
    if isinstance(kept, Mapping):
        shown["features"] = {key: kept.get(key) for key in ("space", "dim", "same_product_similarity")}
    return shown
