"""Dot products of a batch of query rows with many stored rows, in the order OpenBLAS runs fastest."""

from __future__ import annotations

import numpy as np

FEW_QUERIES = 16  # up to a worker's usual batch: the stored rows first


def dot_rows(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(Q, N) each query's dot product with each of `rows` (N, D): queries @ rows.T. For a batch of a few queries
    it is computed as (rows @ queries.T).T, which OpenBLAS runs up to twice as fast as the transposed view of the
    stored rows, with no copy of them (one core, 4 queries of 1,904-d: 0.36 against 0.57 ms a query against 2,000
    rows, 0.065 against 0.12 ms against 416; 32 queries: 0.09 against 0.12 ms against 2,000 rows, but 0.92 against
    0.63 ms against 100,000 rows of 128-d, hence the few)."""
    q = np.asarray(queries)
    if len(q) <= FEW_QUERIES:
        result: np.ndarray = np.ascontiguousarray((rows @ q.T).T)
        return result
    product: np.ndarray = q @ rows.T
    return product
