"""Minibatch helpers: the one non-finite row finder shared by the readers, convert and serve;
rebatching blocks into minibatches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pipealgos.io.minibatch import Minibatch, first_nonfinite_row, rebatch


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


def _random_blocks(rng: np.random.Generator) -> list[Minibatch]:
    """1-5 labelled blocks of 0-29 rows, width 17: mostly CSR (some with int64 indices), some dense."""
    blocks = []
    for _ in range(rng.integers(1, 6)):
        rows = int(rng.integers(0, 30))
        matrix = sp.random(rows, 17, density=0.3, format="csr", dtype=np.float32, random_state=int(rng.integers(1e9)))
        if rng.random() < 0.3:
            matrix.indices = matrix.indices.astype(np.int64)
        features = matrix if rng.random() < 0.8 else matrix.toarray()
        blocks.append(Minibatch(features, rng.random(rows).astype(np.float32)))
    return blocks


@pytest.mark.parametrize("seed", range(40))
def test_rebatch_cuts_any_blocks_into_exact_minibatches_of_the_same_rows(seed):
    rng = np.random.default_rng(seed)
    blocks, size = _random_blocks(rng), int(rng.integers(1, 40))
    batches = list(rebatch(iter(blocks), size))
    rows = sum(block.size for block in blocks)
    assert [b.size for b in batches] == [size] * (rows // size) + ([rows % size] if rows % size else [])
    want = np.vstack([sp.csr_matrix(block.features).toarray() for block in blocks])
    got = np.vstack([batch.dense() for batch in batches]) if batches else np.zeros((0, 17), np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches] or [np.zeros(0)]),
                                  np.concatenate([block.labels for block in blocks]))
    for batch in (b for b in batches if b.is_sparse):
        assert batch.features.dtype == np.float32
        batch.features.check_format(full_check=True)
        assert batch.features.has_sorted_indices
        assert all(np.all(np.diff(batch.features.indices[a:b]) > 0)
                   for a, b in zip(batch.features.indptr[:-1], batch.features.indptr[1:]))


def test_a_sparse_slice_past_the_end_is_clipped_like_a_python_slice():
    block = Minibatch(sp.csr_matrix(np.eye(3, dtype=np.float32)), None)
    assert block.slice(1, 100).features.toarray().tolist() == [[0, 1, 0], [0, 0, 1]]
    assert block.slice(5, 9).size == 0
