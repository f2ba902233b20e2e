"""The blocked nearest-center assignment against a float64 brute force."""

import numpy as np
import pytest
import torch

from pipealgos.algorithms.nearest_center import NearestCenter


@pytest.mark.parametrize("rows, centers", [(1, 3), (5000, 100), (1531, 1000), (700, 5000)])
def test_nearest_center_matches_brute_force(rows, centers):
    rng = np.random.default_rng(rows + centers)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    c = rng.normal(size=(centers, 20)).astype(np.float32)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    got = NearestCenter(torch.from_numpy(c))(torch.from_numpy(x)).numpy()
    assert got.shape == (rows,) and got.dtype == np.int64
    # The chosen center is a nearest one: exactly the brute force's index except on float32
    # near-ties, where its distance equals the minimum to float32 rounding.
    chosen = d2[np.arange(rows), got]
    np.testing.assert_allclose(chosen, d2.min(1), rtol=1e-5)
    assert (got == d2.argmin(1)).mean() > 0.999


def test_blocks_cover_every_row_once():
    """More rows than one block holds, with a last partial block."""
    c = torch.eye(4, dtype=torch.float32) * 10
    assigner = NearestCenter(c)
    x = c[torch.arange(assigner.block_rows * 3 + 7) % 4] + 0.5
    np.testing.assert_array_equal(assigner(x).numpy(), np.arange(len(x)) % 4)
