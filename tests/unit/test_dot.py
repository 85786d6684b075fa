"""dot_rows: queries @ rows.T, whichever order it computes it in."""

from __future__ import annotations

import numpy as np
import pytest

from models.answer.dot import FEW_QUERIES, dot_rows


@pytest.mark.parametrize("queries", [1, 4, FEW_QUERIES, FEW_QUERIES + 1, 64])
def test_it_is_the_queries_times_the_rows_transposed_in_c_order(queries: int) -> None:
    rng = np.random.default_rng(queries)
    q = rng.standard_normal((queries, 40)).astype(np.float32)
    rows = rng.standard_normal((300, 40)).astype(np.float32)
    product = dot_rows(q, rows)
    assert product.shape == (queries, 300) and product.dtype == np.float32
    assert product.flags.c_contiguous  # rows of it are sliced and partitioned along axis 1
    np.testing.assert_allclose(product, q.astype(np.float64) @ rows.T.astype(np.float64), rtol=1e-4, atol=1e-4)
