"""The spectral moments of LDA, streamed from sparse word counts in two passes.

Notation: a document is a count vector c over the V words, L = Σc its length. The per-document
estimators are the unbiased ones for *counts* (Zou et al. 2013; Anandkumar et al. 2014 give
them for one-hot words), averaged with equal weight over the documents long enough for them:

* E1 = mean over documents with L >= 1 of c / L;
* E2 = mean over documents with L >= 2 of (c cᵀ − diag c) / (L(L−1));
* E3 = mean over documents with L >= 3 of
  (c⊗c⊗c − Σ_i c_i (e_i⊗e_i⊗c + e_i⊗c⊗e_i + c⊗e_i⊗e_i) + 2 Σ_i c_i e_i⊗e_i⊗e_i) / (L(L−1)(L−2)).

Nothing V×V or V×V×V is ever formed. Three streamed passes (:class:`SketchPass` twice, then
:class:`SecondPass`):

1. Σ c/L, s2 = Σ c/(L(L−1)) and the sketch E2·Ω for a fixed Gaussian Ω (V×p, p = 2k'+10, the
   same on every host): the sparse operator E2 applied to Ω a minibatch at a time, as
   Σ (c (cᵀΩ) − diag(c) Ω)/(L(L−1)). Q = orth(M2·Ω), M2 = E2 − α0/(α0+1)·E1E1ᵀ (the
   randomised range finder).
2. The same sums with Q in place of Ω: one step of subspace iteration. It is needed: M2's
   estimate has a flat noise tail over the whole vocabulary whose total weight is comparable
   to the weakest topic's eigenvalue, so the one-pass basis is bent by it (matched L1 of β
   0.15-0.26 depending on the seed on a 20,000-document corpus, V = 1,000, 20 topics, against
   0.073 with the exact eigenvectors; after this pass 0.073 for every seed). P = the top k'
   eigenvectors of M2 within orth(M2·Q).
3. Everything projected on P (k' columns), with z = Pᵀc: the exact k'×k' Σ z zᵀ/(L(L−1)),
   the k'×k'×k' Σ z⊗z⊗z/(L(L−1)(L−2)) (one GEMM per minibatch), and the V×k'
   R = Σ c zᵀ/(L(L−1)(L−2)) and V-vector s3 = Σ c/(L(L−1)(L−2)) that the diagonal
   corrections of E3 need; E3(W, W, W) for any whitening W inside span(P) is assembled from
   these (:meth:`SecondPass.whitened_third`).

When the vocabulary is no wider than p, P is the identity and pass 2 is skipped.

Every quantity is a sum, so minibatches, hosts and passes merge by adding (one all-reduce per
pass). Sums are float64. Memory: a few V×p float64 matrices (V = 100,000, p = 60 for
20 topics: 48 MB each); no per-document state survives a minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import DataError
from pipealgos.io.minibatch import Features

from ..collectives import all_reduce
from ..tensors import sparse_csr_tensor

OVERSAMPLING = 10  # range-finder columns beyond twice the whitening rank
V_CHUNK = 8192  # vocabulary rows per step when summing the diagonal corrections of E3
PAIR_ELEMENTS = 1 << 22  # z⊗z values formed at once in the third-moment update (32 MB of float64)


def sketch_columns(whitening_rank: int, vocabulary: int) -> int:
    """p: the range finder's width (the whole vocabulary when that is smaller)."""
    return min(vocabulary, 2 * whitening_rank + OVERSAMPLING)


@dataclass
class DocumentCounts:
    """How many documents of a pass went where."""

    seen: int = 0  # every record read
    empty: int = 0  # L = 0: skipped
    m1: int = 0  # L > 0
    m2: int = 0  # L >= 2
    m3: int = 0  # L >= 3

    def as_array(self) -> np.ndarray:
        return np.array([self.seen, self.empty, self.m1, self.m2, self.m3], dtype=np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "DocumentCounts":
        return cls(*(int(round(v)) for v in values))


class CountBatch:
    """One minibatch of word counts, checked, with the per-document weights of E1, E2, E3.

    ``first_record``: the channel-wide index of the minibatch's first record, for errors."""

    def __init__(self, features: Features, first_record: int, channel: str, device: torch.device) -> None:
        csr = sp.csr_matrix(features, dtype=np.float64)
        check_counts(csr, first_record, channel)
        length = np.asarray(csr.sum(axis=1)).ravel()
        self.rows = csr.shape[0]
        self.length = length
        # On the CPU scipy's CSR products are several times faster than torch's (measured on
        # 4096 documents × 50,000 words: Xᵀ·A 0.03 s against 0.2 s); on a GPU torch's.
        self.csr = csr
        self.x = None if device.type == "cpu" else sparse_csr_tensor(csr, device, torch.float64)
        self.device = device
        self.w1 = self._weight(length, 1)
        self.w2 = self._weight(length, 2)
        self.w3 = self._weight(length, 3)

    def _weight(self, length: np.ndarray, order: int) -> torch.Tensor:
        """1 / (L(L−1)...(L−order+1)) for documents with L >= order, else 0."""
        falling = np.ones_like(length)
        for j in range(order):
            falling = falling * (length - j)
        weight = np.where(length >= order, 1.0 / np.where(length >= order, falling, 1.0), 0.0)
        return torch.from_numpy(weight).to(self.device)

    def counts(self) -> DocumentCounts:
        length = self.length
        return DocumentCounts(self.rows, int((length == 0).sum()), int((length > 0).sum()),
                              int((length >= 2).sum()), int((length >= 3).sum()))

    def times(self, dense: torch.Tensor) -> torch.Tensor:
        """X @ dense (documents × columns)."""
        if self.x is None:
            return torch.from_numpy(self.csr @ dense.numpy())
        return torch.sparse.mm(self.x, dense)

    def transpose_times(self, dense: torch.Tensor) -> torch.Tensor:
        """Xᵀ @ dense (words × columns), without forming Xᵀ on the device: each stored count
        adds its document's row."""
        if self.x is None:
            return torch.from_numpy(np.asarray(self.csr.T @ dense.numpy()))
        rows = torch.repeat_interleave(torch.arange(self.rows, device=self.device), self.x.crow_indices().diff())
        out = torch.zeros(self.x.shape[1], dense.shape[1], dtype=dense.dtype, device=self.device)
        return out.index_add_(0, self.x.col_indices(), self.x.values()[:, None] * dense[rows])


def check_counts(csr: sp.csr_matrix, first_record: int, channel: str | None) -> None:
    """Word counts are finite and non-negative (non-integer counts are allowed: see the
    package docstring); else a DataError naming the record (channel-wide index)."""
    bad = ~np.isfinite(csr.data) | (csr.data < 0)
    if bad.any():
        position = int(np.argmax(bad))
        row = int(np.searchsorted(csr.indptr, position, side="right") - 1)
        raise DataError(f"word {int(csr.indices[position])} has count {float(csr.data[position])!r}; LDA needs "
                        f"non-negative finite word counts", channel=channel, record=first_record + row,
                        fix="Write each document as the counts of its words (>= 0)")


def random_test_matrix(vocabulary: int, columns: int, seed: int, device: torch.device) -> torch.Tensor:
    """Ω (V×columns, standard normal). It depends on the seed only (not the host), so the
    hosts' sketches add up."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(vocabulary, columns, generator=generator, dtype=torch.float64).to(device)


class SketchPass:
    """One pass of Σ c/L, s2 = Σ c/(L(L−1)) and E2·G for a fixed V×p ``test_matrix`` G
    (see the module docstring), in float64 on the training device."""

    def __init__(self, test_matrix: torch.Tensor) -> None:
        vocabulary = test_matrix.shape[0]
        self.device = test_matrix.device
        self.test_matrix = test_matrix
        self.counts = DocumentCounts()
        self.m1_sum = torch.zeros(vocabulary, dtype=torch.float64, device=self.device)
        self.s2 = torch.zeros(vocabulary, dtype=torch.float64, device=self.device)
        self.sketch = torch.zeros_like(test_matrix)

    def add(self, batch: CountBatch) -> None:
        batch_counts = batch.counts()
        for name in ("seen", "empty", "m1", "m2", "m3"):
            setattr(self.counts, name, getattr(self.counts, name) + getattr(batch_counts, name))
        sums = batch.transpose_times(torch.stack([batch.w1, batch.w2], dim=1))
        self.m1_sum += sums[:, 0]
        self.s2 += sums[:, 1]
        if self.test_matrix.shape[1]:  # Σ c (cᵀG)/(L(L−1)); the diag(c)·G part is s2·G, applied once at the end
            self.sketch += batch.transpose_times(batch.times(self.test_matrix) * batch.w2[:, None])

    def merge_hosts(self) -> None:
        counts, self.m1_sum, self.s2, self.sketch = all_reduce(
            [self.counts.as_array(), self.m1_sum, self.s2, self.sketch], self.device)
        self.counts = DocumentCounts.from_array(counts)

    def m1(self) -> torch.Tensor:
        return self.m1_sum / self.counts.m1

    def m2_times_test_matrix(self, alpha0: float) -> torch.Tensor:
        """M2·G, M2 = E2 − α0/(α0+1)·E1E1ᵀ."""
        m1 = self.m1()
        e2_g = (self.sketch - self.s2[:, None] * self.test_matrix) / self.counts.m2
        return e2_g - (alpha0 / (alpha0 + 1)) * torch.outer(m1, m1 @ self.test_matrix)

    def range_basis(self, alpha0: float) -> torch.Tensor:
        """Q = orth(M2·G) (V×p): the randomised range finder's basis, or, with G the previous
        pass's Q, one step of subspace (power) iteration."""
        return torch.linalg.qr(self.m2_times_test_matrix(alpha0))[0]

    def top_eigenvectors(self, alpha0: float, rank: int) -> torch.Tensor:
        """P (V×rank, orthonormal): the top ``rank`` eigenvectors of M2 within Q = orth(M2·G),
        with QᵀM2Q ≈ (QᵀM2G)(QᵀG)⁺ (Halko, Martinsson, Tropp 2011, section 5.5: no further
        look at the data)."""
        product = self.m2_times_test_matrix(alpha0)
        q = torch.linalg.qr(product)[0]
        core = (q.T @ product) @ torch.linalg.pinv(q.T @ self.test_matrix)
        eigenvalues, vectors = torch.linalg.eigh((core + core.T) / 2)
        return q @ vectors[:, torch.argsort(eigenvalues, descending=True)[:rank]]


class SecondPass:
    """The moments projected on the basis P (see the module docstring)."""

    def __init__(self, basis: torch.Tensor) -> None:
        self.basis = basis
        vocabulary, p = basis.shape
        zeros = dict(dtype=torch.float64, device=basis.device)
        self.second = torch.zeros(p, p, **zeros)  # Σ w2 z zᵀ
        self.third = torch.zeros(p, p * p, **zeros)  # Σ w3 z⊗z⊗z, unfolded
        self.cross = torch.zeros(vocabulary, p, **zeros)  # R = Σ w3 c zᵀ
        self.s3 = torch.zeros(vocabulary, **zeros)  # Σ w3 c

    def add(self, batch: CountBatch) -> None:
        z = batch.times(self.basis)
        self.second += z.T @ (batch.w2[:, None] * z)
        rows = max(1, PAIR_ELEMENTS // z.shape[1] ** 2)
        for start in range(0, len(z), rows):  # the z⊗z rows in slices of bounded memory
            part = z[start : start + rows]
            pairs = (part[:, :, None] * part[:, None, :]).reshape(len(part), -1)
            self.third += (batch.w3[start : start + rows, None] * part).T @ pairs
        sums = batch.transpose_times(torch.cat([batch.w3[:, None] * z, batch.w3[:, None]], dim=1))
        self.cross += sums[:, :-1]
        self.s3 += sums[:, -1]

    def merge_hosts(self) -> None:
        self.second, self.third, self.cross, self.s3 = all_reduce(
            [self.second, self.third, self.cross, self.s3], self.basis.device)

    def projected_e2(self, counts: DocumentCounts, s2: torch.Tensor) -> torch.Tensor:
        """PᵀE2P."""
        diagonal = self.basis.T @ (s2[:, None] * self.basis)
        return (self.second - diagonal) / counts.m2

    def whitened_third(self, counts: DocumentCounts, whiten: torch.Tensor) -> torch.Tensor:
        """E3(W, W, W) for W = P·whiten (``whiten``: basis columns × rank)."""
        k = whiten.shape[1]
        p = self.basis.shape[1]
        cubic = torch.einsum("ajk,ab,jc,kd->bcd", self.third.reshape(p, p, p), whiten, whiten, whiten)
        words = self.basis @ whiten  # row i: Wᵀe_i
        cross = self.cross @ whiten  # row i: Σ w3 c_i Wᵀc
        pair_cross = torch.zeros(k, k, k, dtype=torch.float64, device=whiten.device)
        diagonal = torch.zeros(k, k, k, dtype=torch.float64, device=whiten.device)
        for start in range(0, len(words), V_CHUNK):
            u = words[start : start + V_CHUNK]
            uu = (u[:, :, None] * u[:, None, :]).reshape(len(u), k * k)
            pair_cross += (uu.T @ cross[start : start + V_CHUNK]).reshape(k, k, k)
            diagonal += (uu.T @ (self.s3[start : start + V_CHUNK, None] * u)).reshape(k, k, k)
        # Σ_i c_i (e_i⊗e_i⊗c + e_i⊗c⊗e_i + c⊗e_i⊗e_i): the three placements of one term.
        corrections = pair_cross + pair_cross.permute(0, 2, 1) + pair_cross.permute(2, 0, 1)
        return (cubic - corrections + 2 * diagonal) / counts.m3
