"""Re-centring: a consolidation moves the mean a version's rows are centred on to the mean of the photos it holds.

A recipe that centres subtracts the mean of the training's photos before the last L2 normalisation, and that mean is
inside the served ONNX graph. Products enrolled since (of another kind: the digits onto Fashion-MNIST moved it 0.35)
leave every row off-centre, where a training on the same photos would centre on all of them. Past RECENTRE_PAST, a
consolidation round asked to choose the classifiers again (not a quick one) fits on rows finished again on the new
mean (recipe.recentre: exact, from the finished rows alone), with the gallery's rows, spreads and photo index made
anew, and the refinements of the enrolments that came meanwhile fitted again on their rows in the new space. The
graph is kept: the version records its mean beside the rows' (models.bundle: `graph_center`) and the ONNX engine
finishes the graph's features again on the rows' mean (models.extract.engines.RecentredEngine); the torch engines
centre on it themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.answer.gallery import product_spread
from models.answer.gallery_rows import GalleryRows
from models.answer.refinements import Refinement
from models.answer.row_shards import StoredRows
from models.bundle import Means, ModelBundle
from models.extract.recipe import recentre, uncentred_mean
from models.train.enrolment_base import EnrolmentBase
from models.train.quick_enrolment import refinement_for

# the rows' mean moved this far from the one they are centred on: a round that searches re-centres them, writing every
# row anew (products of another kind moved it 0.35, 400 new parts on a 10-part training 0.17, new variants of the
# trained families at 1,020 parts 0.003)
RECENTRE_PAST = 0.1


@dataclass(frozen=True)
class Recentring:
    """From the mean the rows are centred on (`old`) to the mean of their real photos (`new`); `graph`: the mean the
    version's ONNX graph centres on, which stays."""

    old: np.ndarray
    new: np.ndarray
    graph: np.ndarray
    moved: float

    @property
    def centers(self) -> Means:
        """What the version written records: the rows' mean and the graph's."""
        return self.new, self.graph

    def base(self, base: EnrolmentBase) -> EnrolmentBase:
        return replace(base, features=recentre(base.features, self.old, self.new))

    def stored(self, rows: StoredRows) -> StoredRows:
        """The rows in use finished again (float16, as stored), to be written anew: none of the old shards hold them."""
        used = rows.used()
        columns = {**used, "features": recentre(used["features"], self.old, self.new, np.float16)}
        return StoredRows(columns, np.ones(len(columns["features"]), dtype=bool), None)

    def gallery(self, gallery: GalleryRows) -> GalleryRows:
        """The gallery's rows finished again, each product's spread measured again, and no photo index (with_index
        builds one: the old one ranks in the old space)."""
        rows = self.stored(gallery.rows)
        used = rows.used()
        names, codes = np.unique(used["products"], return_inverse=True)
        mean, std = product_spread(used["features"].astype(np.float32), codes, len(names))
        spread = {
            **gallery.spread,
            **{str(name): (float(m), float(s)) for name, m, s in zip(names, mean, std, strict=True)},
        }
        return GalleryRows(rows, spread, None, None)

    def refinements(self, refinements: tuple[Refinement, ...], rows: StoredRows, seed: int) -> tuple[Refinement, ...]:
        """Each refinement fitted again over its product and group on `rows` (re-centred: `stored`), as the
        enrolment that made it fitted it; only the rows of their products are read."""
        if not refinements:
            return ()
        wanted = {product for r in refinements for product in r.classifier.classes}
        mine = rows.used_where(np.isin(rows.columns["products"].astype(str), sorted(wanted)))
        base = EnrolmentBase.from_columns(mine, "the re-centred rows")
        return tuple(
            refinement_for(base, r.product, list(r.group), source=r.source, new=r.new, seed=seed) for r in refinements
        )


def rows_mean(bundle: ModelBundle, base: EnrolmentBase) -> np.ndarray | None:
    """The mean of `base`'s real rows before centring (float64), or None for a recipe that does not centre."""
    return None if bundle.center is None else uncentred_mean(base.features, bundle.center, ~base.synthetic)


def mean_moved(bundle: ModelBundle, mean: np.ndarray | None) -> float | None:
    """How far `mean` (rows_mean) lies from the mean the version's rows are centred on; None for a recipe that does
    not centre."""
    return None if bundle.center is None or mean is None else float(np.linalg.norm(mean - bundle.center))


def recentring(bundle: ModelBundle, mean: np.ndarray | None) -> Recentring | None:
    """The re-centring onto `mean` (rows_mean) that RECENTRE_PAST calls for, or None: a recipe that does not
    centre, or a mean that has moved less."""
    moved = mean_moved(bundle, mean)
    if mean is None or bundle.center is None or moved is None or moved < RECENTRE_PAST:
        return None
    graph = bundle.center if bundle.graph_center is None else bundle.graph_center
    return Recentring(bundle.center, mean.astype(np.float32), graph, moved)
