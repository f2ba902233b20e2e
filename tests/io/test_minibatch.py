"""Minibatch helpers: the one non-finite row finder shared by the readers, convert and serve."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pipealgos.io.minibatch import first_nonfinite_row


def test_all_finite_is_none():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert first_nonfinite_row(x) is None
    assert first_nonfinite_row(sp.csr_matrix(x)) is None
    assert first_nonfinite_row(np.zeros((0, 3), np.float32)) is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row", [0, 5, 9])
def test_dense_sparse_and_1d_name_the_first_bad_row(bad, row):
    x = np.ones((10, 4), np.float32)
    x[row, 2] = bad
    x[9, 0] = np.nan  # a later bad row does not hide the first
    assert first_nonfinite_row(x) == row
    assert first_nonfinite_row(sp.csr_matrix(x)) == row
    assert first_nonfinite_row(x[:, 2]) == row


def test_sum_overflow_alone_is_not_a_bad_row():
    """Finite values whose sum overflows float32 are fine: the cheap sum check looks closer."""
    x = np.full((4, 2), 3e38, np.float32)
    assert first_nonfinite_row(x) is None
    assert first_nonfinite_row(sp.csr_matrix(x)) is None


def test_float64_beyond_float32_counts_after_the_cast():
    x = np.array([[1.0], [1e40]])
    assert first_nonfinite_row(x) is None  # finite as stored
    with np.errstate(over="ignore"):
        assert first_nonfinite_row(x.astype(np.float32)) == 1


def test_sparse_rows_without_values_are_skipped_correctly():
    x = sp.csr_matrix((np.float32([1, np.inf]), [0, 1], [0, 1, 1, 1, 2]), shape=(4, 2))
    assert first_nonfinite_row(x) == 3
