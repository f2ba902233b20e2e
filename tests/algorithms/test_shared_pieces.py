"""The pieces algorithms share: sparse minibatches into torch, and early stopping."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.algorithms.collectives import EarlyStopping
from pipealgos.algorithms.tensors import embedding_bag_inputs, to_torch
from pipealgos.testing import RecordingReport


def _csr(rows=7, features=1_000_000, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = sp.random(rows, features, density=5e-5, format="lil", dtype=np.float32, random_state=rng)
    x[3] = 0  # an empty row
    return x.tocsr()


def test_csr_stays_sparse_and_multiplies_as_the_dense_matrix():
    x = _csr(features=500)
    w = torch.randn(500, 4)
    tensor = to_torch(x, torch.device("cpu"), keep_sparse=True)
    assert tensor.layout == torch.sparse_csr and tuple(tensor.shape) == x.shape
    assert tensor.values().numel() == x.nnz  # memory follows the non-zeros
    expected = torch.from_numpy(x.toarray()) @ w
    torch.testing.assert_close(tensor @ w, expected, rtol=1e-5, atol=1e-5)
    dense = to_torch(x, torch.device("cpu"))
    assert dense.layout == torch.strided
    torch.testing.assert_close(dense, torch.from_numpy(x.toarray()))


def test_embedding_bag_triple_computes_the_product_at_a_million_features():
    x = _csr()
    table = torch.randn(x.shape[1], 3)
    indices, offsets, weights = embedding_bag_inputs(x, torch.device("cpu"))
    assert len(indices) == x.nnz and len(offsets) == x.shape[0]
    got = torch.nn.functional.embedding_bag(indices, table, offsets, mode="sum", per_sample_weights=weights)
    rows, cols = x.nonzero()
    expected = torch.zeros(x.shape[0], 3)
    expected.index_add_(0, torch.from_numpy(rows), table[torch.from_numpy(cols)] * torch.from_numpy(x.data)[:, None])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got[3].abs().sum() == 0


def test_early_stopping_patience_tolerance_and_direction():
    report = RecordingReport()
    losses = EarlyStopping(report, patience=2, tolerance=0.01, higher_is_better=False)
    assert [losses.update(e, v) for e, v in enumerate([10.0, 9.0, 8.95, 8.99])] == [False, False, False, True]
    assert report.messages == ["early stopping after epoch 3: no relative improvement above 0.01 for 2 epochs"]
    accuracy = EarlyStopping(RecordingReport(), patience=1, tolerance=0.0)
    assert [accuracy.update(e, v) for e, v in enumerate([0.5, 0.6, 0.6])] == [False, False, True]
