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
from models.answer.row_shards import write_shard
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


def refined(
    probabilities: np.ndarray, features: np.ndarray, products: Sequence[str], refinements: Sequence[Refinement]
) -> np.ndarray:
    """The head's (N, products) probabilities with each refinement's group shared out again, in order."""
    if not refinements:
        return probabilities
    column = {product: index for index, product in enumerate(products)}
    result = np.array(probabilities, dtype=np.float64, copy=True)
    for refinement in refinements:
        columns = [column[name] for name in refinement.classifier.classes]
        mass = result[:, columns].sum(axis=1, keepdims=True)
        result[:, columns] = mass * refinement.classifier.probabilities(features)
    return result


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


def write_refinements(staging: Path, refinements: Sequence[Refinement]) -> list[dict[str, Any]]:
    """Each refinement's arrays in a file of its own, named by its content (the next version links it, whatever
    comes after); returns their records (`file`: the name) for the manifest's head."""
    records = []
    for refinement in refinements:
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
