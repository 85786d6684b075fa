"""Refinements: how a product enrolled in seconds joins a head without refitting it.

A quick enrolment leaves every node of the head as it was and adds one refinement: a small classifier over the
new product and the products its photos are confused with (its `group`, at most a few dozen, found by the head
and the gallery). On a frame, the probability the head gives the group as a whole is shared out again among the
group and the new product by that classifier: P(q) = P(group) x P(q | group + product) for every q of it. What
the head gives the other products is untouched, so the cost of an enrolment depends on its photos and its
look-alikes, never on the catalog. Refinements apply in the order they were made (a later one may name a product
an earlier one added); a consolidating refit (models.train.consolidation) folds them into the nodes later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.answer.classifiers import Classifier
from models.answer.row_shards import link_or_copy, write_shard
from models.errors import InvalidModel


@dataclass(frozen=True)
class Refinement:
    product: str  # the product it enrolled
    classifier: Classifier  # over the product and its group
    source: str  # the version that made it: consolidation keeps the ones made after the version it refitted
    new: bool = True  # it added the product to the head (False: new photos of a product the head knew)

    @property
    def group(self) -> tuple[str, ...]:
        return tuple(c for c in self.classifier.classes if c != self.product)

    def record(self) -> dict[str, Any]:
        return {"product": self.product, "source": self.source, "new": self.new, **self.classifier.record()}


UNREFINED_MASS = 1e-3  # a row whose group holds less keeps the head's values there (as an unevaluated category)


class RefinementLayout:
    """A head's refinements laid out once for its frames: each one's columns, and which later ones share a column
    with it. A row whose group holds less than UNREFINED_MASS of its probability (where the group's share of it
    would move by less than that) keeps the head's values for the group and gets nothing for the product the
    refinement adds, as the category-first head leaves a category it does not evaluate: so a frame pays for the
    refinements of the products it may be, not for every one (a classifier evaluated per refinement: 0.5 ms a frame
    at 56 refinements before, whatever the frame). A row's values never depend on the rows beside it."""

    def __init__(self, products: Sequence[str], refinements: Sequence[Refinement]) -> None:
        column = {product: index for index, product in enumerate(products)}
        self.refinements = tuple(refinements)
        self.columns = [np.array([column[n] for n in r.classifier.classes], dtype=np.int64) for r in refinements]
        self._flat = np.concatenate(self.columns) if self.columns else np.zeros(0, dtype=np.int64)
        self._starts = np.cumsum([0, *(len(c) for c in self.columns[:-1])]).astype(np.int64)
        sharing: dict[int, list[int]] = {}
        self._later: list[list[int]] = [[] for _ in self.refinements]
        for index, columns in enumerate(self.columns):
            for j in sorted({j for c in columns.tolist() for j in sharing.get(c, [])}):
                self._later[j].append(index)
            for c in columns.tolist():
                sharing.setdefault(c, []).append(index)
        # feeds[j, k]: refinement j is k or comes before k through refinements sharing a product (what j moves, k
        # may share out), so a row that needs k needs j
        self._feeds = np.eye(len(self.refinements), dtype=bool)
        for j in reversed(range(len(self.refinements))):
            for k in self._later[j]:
                self._feeds[j] |= self._feeds[k]

    def apply(self, probabilities: np.ndarray, features: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """`probabilities` (N, products) with each refinement applied, in order, to the rows its group holds at
        least UNREFINED_MASS of, and to the rows on a line (`allowed`: (N, products) bool, as the head takes it)
        whose line holds one of its products, however little the group holds (the caller renormalises over the
        line). A refinement moves probability only among its own columns, so one whose columns no applied
        refinement touched still holds what the head gave it: those no row needs are skipped without a look."""
        if not self.refinements:
            return probabilities
        result = np.array(probabilities, dtype=np.float64, copy=True)
        needed = np.add.reduceat(result[:, self._flat], self._starts, axis=1) >= UNREFINED_MASS  # (N, refinements)
        on_line = self._on_line(allowed)
        if on_line is not None:
            needed |= on_line
        visit = [bool(v) for v in np.asarray(needed.any(axis=0)).ravel()]  # as the head gave them
        x = np.asarray(features)
        for index, refinement in enumerate(self.refinements):
            if not visit[index]:
                continue
            columns = self.columns[index]
            before = result[:, columns]
            mass = before.sum(axis=1, keepdims=True)
            applies = mass >= UNREFINED_MASS
            if on_line is not None:
                applies |= on_line[:, index, None]
            if not applies.any():
                continue
            for later in self._later[index]:
                visit[later] = True
            # every row evaluated (one product of arrays costs less than picking the rows out), those it applies to
            # changed
            shared = mass * refinement.classifier.probabilities(x)
            result[:, columns] = shared if applies.all() else np.where(applies, shared, before)
        return result

    def _on_line(self, allowed: np.ndarray | None) -> np.ndarray | None:
        """(N, refinements): the row is on a line that holds one of the refinement's products, or one of a later
        refinement's that shares a product with it (what it moves there, that one shares out); None off lines."""
        if allowed is None:
            return None
        mask = np.asarray(allowed, dtype=bool)
        lined = ~mask.all(axis=1)
        if not lined.any():
            return None
        touches = np.add.reduceat(mask[:, self._flat].astype(np.int32), self._starts, axis=1) > 0
        touches[~lined] = False
        needs: np.ndarray = (touches.astype(np.int32) @ self._feeds.T.astype(np.int32)) > 0  # and all they build on
        return needs


def added_products(refinements: Sequence[Refinement]) -> list[str]:
    """The products the refinements add to the head, in order."""
    return [refinement.product for refinement in refinements if refinement.new]


def check_order(base_products: Sequence[str], refinements: Sequence[Refinement]) -> None:
    """InvalidModel when a refinement names a product neither the nodes nor an earlier refinement made, or adds one
    that is there already."""
    known = set(base_products)
    if len({refinement.source for refinement in refinements}) != len(refinements):
        raise InvalidModel("two refinements name the same version as their source")
    for refinement in refinements:
        classes = refinement.classifier.classes
        if len(classes) < 2 or refinement.product not in classes or len(set(classes)) != len(classes):
            raise InvalidModel(f"the refinement of {refinement.product!r} is not over it and its group, each once")
        missing = sorted(set(refinement.group) - known)
        if missing:
            raise InvalidModel(f"the refinement of {refinement.product!r} names products no node knows: {missing}")
        if refinement.new == (refinement.product in known):
            state = "adds a product the head has" if refinement.new else "refines a product the head lacks"
            raise InvalidModel(f"the refinement of {refinement.product!r} {state}")
        known.add(refinement.product)


REFINEMENT_PREFIX = "refinement"  # each in its own content-named file: refinement-<sha256[:16]>.npz


def write_refinements(
    staging: Path, refinements: Sequence[Refinement], stored: Mapping[int, Path] | None = None
) -> list[dict[str, Any]]:
    """Each refinement's arrays in a file of its own, named by its content (the next version links it, whatever
    comes after); returns their records (`file`: the name) for the manifest's head. `stored`: the file a refinement
    was loaded from, by its identity (id()), linked instead of written again."""
    records = []
    for refinement in refinements:
        path = (stored or {}).get(id(refinement))
        if path is not None and path.is_file():
            link_or_copy(path, staging / path.name)
            name = path.name
        else:
            name = write_shard(staging, REFINEMENT_PREFIX, refinement.classifier.arrays)
        records.append({**refinement.record(), "file": name})
    return records


def read_refinements(records: Any, arrays_of: Callable[[str], Mapping[str, np.ndarray]]) -> tuple[Refinement, ...]:
    """The refinements the manifest's records name (`arrays_of(file)`: a verified file's arrays); InvalidModel when
    the records are not a list of them."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise InvalidModel("the head's refinements are not a list")
    restored = []
    for record in records:
        if not isinstance(record, Mapping) or not isinstance(record.get("product"), str):
            raise InvalidModel("a refinement record without its product")
        if not isinstance(record.get("file"), str) or not isinstance(record.get("source"), str):
            raise InvalidModel(f"the refinement of {record['product']!r} names no file or no source")
        if not isinstance(record.get("new", True), bool):
            raise InvalidModel(f"the refinement of {record['product']!r}: `new` is not true or false")
        classifier = Classifier.from_record(record, arrays_of(record["file"]))
        restored.append(Refinement(record["product"], classifier, record["source"], record.get("new", True)))
    return tuple(restored)
