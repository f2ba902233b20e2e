"""The FM forward pass and its gradient on a minibatch's non-zeros, in O(k·nnz).

The linear weights and the factors live in one table ``table`` (feature_dim, 1 + k): column 0
is w, columns 1.. are v. A minibatch gathers the rows of its non-zeros once (nnz, 1 + k) and
never touches the others, so memory and time per minibatch follow its non-zeros, not
``feature_dim``. With ``t_e`` the gathered row of non-zero e, ``x_e`` its value and ``r(e)``
its row:

* ``a_r = Σ_{e in r} x_e t_e`` gives ``w·x`` (column 0) and ``s_r = Σ x_e v_e`` (columns 1..);
* ``ŷ_r = w0 + (w·x)_r + ½ (|s_r|² − Σ_{e in r} |x_e v_e|²)`` (Rendle's identity);
* for ``g_r = ∂L/∂ŷ_r``: ``∂L/∂w_e = g_r x_e`` and ``∂L/∂v_e = g_r x_e (s_r − x_e v_e)``,
  summed over the non-zeros that share a feature (the minibatch's *touched rows*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io.minibatch import Features


@dataclass
class SparseRows:
    """A minibatch's features as its non-zeros: ``features[e]`` (int64), ``rows[e]`` (int64),
    ``values[e]`` (float32), for ``count`` rows."""

    features: torch.Tensor
    rows: torch.Tensor
    values: torch.Tensor
    count: int

    @classmethod
    def from_features(cls, features: Features, device: torch.device) -> "SparseRows":
        """Dense minibatches are taken by their non-zeros, exactly as sparse ones."""
        csr = features if sp.issparse(features) else sp.csr_matrix(features)
        count = csr.shape[0]
        rows = np.repeat(np.arange(count, dtype=np.int64), np.diff(csr.indptr))
        return cls(torch.from_numpy(csr.indices.astype(np.int64, copy=False)).to(device),
                   torch.from_numpy(rows).to(device),
                   torch.from_numpy(np.asarray(csr.data, dtype=np.float32)).to(device), count)


    def localised(self) -> tuple[torch.Tensor, "SparseRows"]:
        """(the touched features (u,) sorted, this minibatch with each feature replaced by its
        position among them): a step gathers the u rows once and computes on those."""
        touched, position = torch.unique(self.features, return_inverse=True)
        return touched, SparseRows(position, self.rows, self.values, self.count)


@dataclass
class Forward:
    """ŷ per row and what the gradient reuses."""

    margin: torch.Tensor  # (n,)
    scaled: torch.Tensor  # (nnz, 1 + k): x_e t_e
    sums: torch.Tensor  # (n, 1 + k): a_r


def forward(bias: torch.Tensor, table: torch.Tensor, batch: SparseRows) -> Forward:
    """``table``: the rows ``batch.features`` index (the whole table, or a minibatch's touched
    rows with a :meth:`SparseRows.localised` batch)."""
    scaled = table.index_select(0, batch.features) * batch.values[:, None]
    sums = torch.zeros(batch.count, table.shape[1], dtype=table.dtype, device=table.device)
    sums.index_add_(0, batch.rows, scaled)
    factor_part = scaled[:, 1:]
    own_squares = torch.zeros(batch.count, dtype=table.dtype, device=table.device)
    own_squares.index_add_(0, batch.rows, (factor_part * factor_part).sum(1))
    s = sums[:, 1:]
    margin = bias + sums[:, 0] + 0.5 * ((s * s).sum(1) - own_squares)
    return Forward(margin, scaled, sums)


def row_gradient(batch: SparseRows, fwd: Forward, margin_grad: torch.Tensor, table_rows: int) -> torch.Tensor:
    """The gradient (table_rows, 1 + k) of the rows ``batch.features`` index, for ``∂L/∂ŷ`` per
    row; with a localised batch, of its touched rows."""
    per_value = margin_grad[batch.rows] * batch.values  # g_r x_e
    grad = torch.empty_like(fwd.scaled)
    grad[:, 0] = per_value
    grad[:, 1:] = per_value[:, None] * (fwd.sums.index_select(0, batch.rows)[:, 1:] - fwd.scaled[:, 1:])
    summed = torch.zeros(table_rows, grad.shape[1], dtype=grad.dtype, device=grad.device)
    summed.index_add_(0, batch.features, grad)
    return summed
