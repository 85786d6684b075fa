"""How far a frame falls from every enrolled product, in units of how far a product's own photos fall from it: the
Mahalanobis distance to the nearest product's mean, with the covariance that products share.

Cosine similarity to the nearest photo treats every direction of the feature space alike. Look-alike products
differ in a few directions (a hole, a slot) that their photos hardly vary along, while pose and light move every
photo a long way along others. Whitened by the spread of photos around their own product's mean, a step along a
direction products differ in counts for more than the same step along one that light moves them in: a never-seen
sibling of a known part lands near that part by cosine and far from it here (docs/performance.md, "Never-seen
siblings on a tuned backbone").

Fitted from a gallery's rows (models.answer.gallery), with numpy and scipy's eigh: the gallery's leading principal
components (at most COMPONENTS), the within-product covariance in them shrunk towards its mean variance, and each
product's mean. A gallery whose rows cannot estimate it (fewer than two rows beyond one per product) has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.answer.sampling import sample_rows

COMPONENTS = 128
SHRINKAGE = 0.1  # of the covariance replaced by its mean variance: photos per product are few, directions many
MAX_FIT_ROWS = 5_000  # rows the components and covariance are estimated from (a seeded sample beyond)


@dataclass(frozen=True)
class ProductDensity:
    center: np.ndarray  # (D,) float32: the rows' mean
    whitening: np.ndarray  # (D, k) float32: centred features to whitened components
    means: np.ndarray  # (k, P) float32, C order: each product's mean, whitened, one column a product (a batch's
    # product with it runs twice as fast as with a (P, k) array's transpose: 0.05 against 0.10 ms a frame at 5,000)
    mean_norms: np.ndarray  # (P,) float32: |means|^2 by column

    @property
    def components(self) -> int:
        return int(self.whitening.shape[1])

    def whitened(self, features: np.ndarray) -> np.ndarray:
        """(Q, k) the features centred and whitened."""
        result: np.ndarray = (np.asarray(features, dtype=np.float32) - self.center) @ self.whitening
        return result

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(Q, P) each feature's squared Mahalanobis distance to each product's mean, per component."""
        z = self.whitened(features)
        squared = (z * z).sum(axis=1, keepdims=True) + self._offsets(z)
        result: np.ndarray = np.maximum(squared, 0.0) / self.components
        return result

    def nearest_distance(self, features: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """(Q,) the log of each feature's squared distance (per component) to the nearest product's mean, of the
        products its row of `masks` (Q, P) allows where given (a line's): about 0 for a photo like those of a known
        product, higher the farther it falls from all of them."""
        z = self.whitened(features)
        offsets = self._offsets(z)  # the nearest mean is the one of least offset: |z|^2 is the row's own
        if masks is not None:
            np.copyto(offsets, np.inf, where=~np.asarray(masks, dtype=bool))
        squared = (z * z).sum(axis=1) + offsets.min(axis=1)
        return _logged(np.maximum(squared, 0.0) / self.components)

    def _offsets(self, z: np.ndarray) -> np.ndarray:
        """(Q, P) |m|^2 - 2 z.m for each whitened row z and product mean m: its squared distance less |z|^2."""
        offsets: np.ndarray = z @ self.means
        offsets *= -2.0
        offsets += self.mean_norms
        return offsets

    def nearest_distance_with(self, features: np.ndarray) -> np.ndarray:
        """(Q,) nearest_distance of each of a new product's photos `features`, its product's mean among the others
        (each photo's own left out of it): as a frame of the product scores once it is enrolled."""
        z = self.whitened(features)
        squared = self.distances(features).min(axis=1)
        if len(z) > 1:
            others = (z.sum(axis=0, keepdims=True) - z) / (len(z) - 1)  # the mean of the other photos
            own = ((z - others) ** 2).sum(axis=1) / self.components
            squared = np.minimum(squared, own)
        return _logged(squared)


def _logged(squared: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.log(np.maximum(np.asarray(squared, dtype=np.float64), 1e-6))
    return result


def fit_density(features: np.ndarray, labels: np.ndarray, products: int, *, seed: int = 0) -> ProductDensity | None:
    """The density of rows `features` (N, D) of products `labels` (N,) in 0..products-1; None when the rows are too
    few to estimate a covariance (fewer than two beyond one per product, or a product without a row)."""
    x = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=products)
    if len(x) - products < 2 or (counts == 0).any():
        return None
    center = x.mean(axis=0)
    means = _product_means(x, labels, counts) - center  # each product's mean, centred
    sample = sample_rows(len(x), MAX_FIT_ROWS, seed)
    k = min(COMPONENTS, x.shape[1], len(x) - products)
    basis = _leading_components(x[sample] - center, k)
    residual = (x[sample] - center - means[labels[sample]]) @ basis
    # the sample's share of the rows' degrees of freedom (N - P: the means are every row's)
    within = _shrunk_covariance(residual, dof=len(sample) * (len(x) - products) / len(x))
    factor = np.linalg.cholesky(within)  # within = L L^T; the whitened distance is |L^-1 (z - m)|
    whitening = np.linalg.solve(factor, basis.T.astype(np.float64)).T.astype(np.float32)  # (D, k) = V L^-T
    whitened_means = means @ whitening
    return ProductDensity(
        center=center,
        whitening=whitening,
        means=np.ascontiguousarray(whitened_means.T),
        mean_norms=(whitened_means * whitened_means).sum(axis=1),
    )


def _product_means(x: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(P, D) float32 each product's mean row: a sum over each product's slice of the rows grouped by product (a
    gallery's already are; np.add.at took 9 s at 100,000 rows, the slices 0.15 s)."""
    order = None if (np.diff(labels) >= 0).all() else np.argsort(labels, kind="stable")
    grouped = x if order is None else x[order]
    ends = np.cumsum(counts)
    sums = [grouped[end - count : end].sum(axis=0, dtype=np.float64) for end, count in zip(ends, counts, strict=True)]
    result: np.ndarray = (np.stack(sums) / counts[:, None]).astype(np.float32)
    return result


def _leading_components(centred: np.ndarray, k: int) -> np.ndarray:
    """(D, k) the k leading principal directions of centred rows (N, D): the top eigenvectors of their scatter,
    those alone computed (scipy's subset: 0.34 s against 0.65 s for all 1,904 on two cores)."""
    from scipy.linalg import eigh  # noqa: PLC0415  # only where a density is fitted: the API never fits one

    x = np.asarray(centred, dtype=np.float32)
    dim = x.shape[1]
    scatter = (x.T @ x).astype(np.float64)
    _, vectors = eigh(scatter, subset_by_index=[dim - k, dim - 1])  # ascending: the largest last
    result: np.ndarray = vectors[:, ::-1]
    return result


def _shrunk_covariance(projected: np.ndarray, dof: float) -> np.ndarray:
    """(k, k) the covariance of residuals around their products' means, shrunk towards its mean variance."""
    covariance = projected.T @ projected / dof
    mean_variance = max(float(np.trace(covariance)) / len(covariance), 1e-12)
    result: np.ndarray = (1 - SHRINKAGE) * covariance + SHRINKAGE * mean_variance * np.eye(len(covariance))
    return result
