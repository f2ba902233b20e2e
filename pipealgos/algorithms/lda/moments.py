"""The spectral moments of LDA, summed from sparse word counts a minibatch at a time.

Notation: a document is a count vector c over the V words, L = Σc its length. The per-document
estimators are the unbiased ones for *counts* (Zou et al. 2013; Anandkumar et al. 2014 give
them for one-hot words), averaged with equal weight over the documents long enough for them:

* E1 = mean over documents with L >= 1 of c / L;
* E2 = mean over documents with L >= 2 of (c cᵀ − diag c) / (L(L−1));
* E3 = mean over documents with L >= 3 of
  (c⊗c⊗c − Σ_i c_i (e_i⊗e_i⊗c + e_i⊗c⊗e_i + c⊗e_i⊗e_i) + 2 Σ_i c_i e_i⊗e_i⊗e_i) / (L(L−1)(L−2)).

Nothing V×V or V×V×V is ever formed. Two accumulators:

* :class:`SketchPass`: Σ c/L, s2 = Σ c/(L(L−1)) and the sketch E2·G for a V×p matrix G
  (p = 2k'+10), the sparse operator E2 applied a minibatch at a time as
  Σ (c (cᵀG) − diag(c) G)/(L(L−1)); Q = orth(M2·G), M2 = E2 − α0/(α0+1)·E1E1ᵀ, is the
  randomised range finder's basis (G Gaussian) or one power step (G the previous Q).
  ``training`` runs it over the documents held in memory (the sample), or over the whole
  channel when the sample turns out not to represent it.
* :class:`ProjectedPass`: everything projected on a fixed orthonormal basis P (k' columns),
  with z = Pᵀc: the exact k'×k' Σ w2 z zᵀ, the k'×k'×k' Σ w3 z⊗z⊗z (one GEMM per minibatch),
  the V×k' Σ w2 c zᵀ (for M2·P) and Σ w3 c zᵀ, s3 = Σ c/(L(L−1)(L−2)) that the diagonal
  corrections of E3 need, and Σ w2 (Σc_i² − L) for tr E2. E3(W, W, W) for any whitening W
  inside span(P) is assembled from these (:meth:`ProjectedPass.whitened_third`).

When the vocabulary is no wider than p, P is the identity.

Every quantity is a sum, so minibatches and hosts merge by adding (one all-reduce). Sums are
float64, the per-minibatch products float32 (``PRODUCTS``). Memory: a few V×p matrices
(V = 100,000, p = 60 for 20 topics: 48 MB each in float64); no per-document state survives
a minibatch.
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
PAIR_ELEMENTS = 1 << 22  # z⊗z values formed at once in the third-moment update (16 MB of float32)
# The per-minibatch products (X·P, Xᵀ·D, the z⊗z⊗z GEMM) run in float32 and are added to float64
# sums: float32 halves the memory they stream through (Xᵀ·D for 16,384 documents × 50,000 words
# × 53 columns took 126 ms in float64, 22 ms in float32, on a 2-core AMD EPYC); its 1e-7 relative
# rounding per minibatch is far below the sampling noise of the moments.
PRODUCTS = torch.float32


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

    ``csr``: float64 counts already checked (:meth:`checked`); ``first_record``: the
    channel-wide index of the minibatch's first record."""

    def __init__(self, csr: sp.csr_matrix, first_record: int, device: torch.device) -> None:
        self.first_record = first_record
        length = np.asarray(csr.sum(axis=1, dtype=np.float64)).ravel()
        self.rows = csr.shape[0]
        self.length = length
        # On the CPU scipy's CSR products are several times faster than torch's (measured on
        # 4096 documents × 50,000 words: Xᵀ·A 0.03 s against 0.2 s); on a GPU torch's.
        self.csr = csr
        self.x = None if device.type == "cpu" else sparse_csr_tensor(csr, device, PRODUCTS)
        self.device = device
        self.w1 = self._weight(length, 1)
        self.w2 = self._weight(length, 2)
        self.w3 = self._weight(length, 3)

    def _weight(self, length: np.ndarray, order: int) -> torch.Tensor:
        """1 / (L(L−1)...(L−order+1)) for documents with L >= order, else 0 (float64)."""
        falling = np.ones_like(length)
        for j in range(order):
            falling = falling * (length - j)
        weight = np.where(length >= order, 1.0 / np.where(length >= order, falling, 1.0), 0.0)
        return torch.from_numpy(weight).to(self.device)

    @classmethod
    def checked(cls, features: Features, first_record: int, channel: str, device: torch.device) -> "CountBatch":
        """A minibatch's features as counts, refused with the record named unless finite and >= 0."""
        csr = sp.csr_matrix(features, dtype=np.float32)
        check_counts(csr, first_record, channel)
        return cls(csr, first_record, device)

    def split(self, rows: int) -> tuple["CountBatch", "CountBatch"]:
        """(the first ``rows`` documents, the others)."""
        return (CountBatch(self.csr[:rows], self.first_record, self.device),
                CountBatch(self.csr[rows:], self.first_record + rows, self.device))

    def squared_norms(self) -> torch.Tensor:
        """Σ_i c_i² per document (float64)."""
        squares = self.csr.astype(np.float64)
        squares.data **= 2
        return torch.from_numpy(np.asarray(squares.sum(axis=1)).ravel()).to(self.device)

    def counts(self) -> DocumentCounts:
        length = self.length
        return DocumentCounts(self.rows, int((length == 0).sum()), int((length > 0).sum()),
                              int((length >= 2).sum()), int((length >= 3).sum()))

    def times(self, dense: torch.Tensor) -> torch.Tensor:
        """X @ dense (documents × columns), in ``PRODUCTS`` precision."""
        dense = dense.to(PRODUCTS)
        if self.x is None:
            return torch.from_numpy(self.csr @ dense.numpy())
        return torch.sparse.mm(self.x, dense)

    def transpose_times(self, dense: torch.Tensor) -> torch.Tensor:
        """Xᵀ @ dense (words × columns) in ``PRODUCTS`` precision, without forming Xᵀ on the
        device: each stored count adds its document's row."""
        dense = dense.to(PRODUCTS)
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
    return torch.randn(vocabulary, columns, generator=generator, dtype=PRODUCTS).to(device)


class SketchPass:
    """One pass of Σ c/L, s2 = Σ c/(L(L−1)) and E2·G for a fixed V×p ``test_matrix`` G
    (see the module docstring) on the training device. The V×p matrices (G, the sketch, the
    range basis) are float32 (``PRODUCTS``): they only choose a subspace, a randomised one at
    that, and half the bytes keep V = 100,000 well under 1 GB; the V-vectors are float64."""

    def __init__(self, test_matrix: torch.Tensor) -> None:
        vocabulary = test_matrix.shape[0]
        self.device = test_matrix.device
        self.test_matrix = test_matrix.to(PRODUCTS)
        self.counts = DocumentCounts()
        self.m1_sum = torch.zeros(vocabulary, dtype=torch.float64, device=self.device)
        self.s2 = torch.zeros(vocabulary, dtype=torch.float64, device=self.device)
        self.sketch = torch.zeros_like(self.test_matrix)

    def add(self, batch: CountBatch) -> None:
        batch_counts = batch.counts()
        for name in ("seen", "empty", "m1", "m2", "m3"):
            setattr(self.counts, name, getattr(self.counts, name) + getattr(batch_counts, name))
        sums = batch.transpose_times(torch.stack([batch.w1, batch.w2], dim=1))
        self.m1_sum += sums[:, 0]
        self.s2 += sums[:, 1]
        if self.test_matrix.shape[1]:  # Σ c (cᵀG)/(L(L−1)); the diag(c)·G part is s2·G, applied once at the end
            self.sketch += batch.transpose_times(batch.times(self.test_matrix) * batch.w2[:, None].to(PRODUCTS))

    def merge_hosts(self) -> None:
        counts, self.m1_sum, self.s2, self.sketch = all_reduce(
            [self.counts.as_array(), self.m1_sum, self.s2, self.sketch], self.device)
        self.counts = DocumentCounts.from_array(counts)

    def m1(self) -> torch.Tensor:
        return self.m1_sum / self.counts.m1

    def m2_times_test_matrix(self, alpha0: float) -> torch.Tensor:
        """M2·G, M2 = E2 − α0/(α0+1)·E1E1ᵀ (one V×p temporary besides the result)."""
        m1 = self.m1().to(PRODUCTS)
        product = self.sketch - self.s2[:, None].to(PRODUCTS) * self.test_matrix
        product /= self.counts.m2
        return product.addr_(m1, m1 @ self.test_matrix, alpha=-(alpha0 / (alpha0 + 1)))

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
        core = ((q.T @ product).double()) @ torch.linalg.pinv((q.T @ self.test_matrix).double())
        eigenvalues, vectors = torch.linalg.eigh((core + core.T) / 2)
        top = vectors[:, torch.argsort(eigenvalues, descending=True)[:rank]]
        return torch.linalg.qr(q.double() @ top)[0]  # float64 and orthonormal to float64 rounding


class ProjectedPass:
    """The moments projected on an orthonormal basis P (V×p), in one pass (see the module
    docstring), with z = Pᵀc per document:

    * the counts, Σ c/L, s2 = Σ c/(L(L−1)), s3 = Σ c/(L(L−1)(L−2)) and Σ (Σc_i² − L)/(L(L−1))
      (for tr E2);
    * Σ w2 z zᵀ (p×p) and Σ w3 z⊗z⊗z (p×p², unfolded);
    * Σ w2 c zᵀ and Σ w3 c zᵀ (V×p): E2·P for the unwhitening and the diagonal corrections of E3.

    One product X·P and one Xᵀ·[w2 z, w3 z, w1, w2, w3] per minibatch; the rest is dense."""

    def __init__(self, basis: torch.Tensor) -> None:
        self.basis = basis
        self.basis_products = basis.to(PRODUCTS)  # converted once, not per minibatch
        self.device = basis.device
        vocabulary, p = basis.shape
        zeros = dict(dtype=torch.float64, device=basis.device)
        self.counts = DocumentCounts()
        self.second = torch.zeros(p, p, **zeros)  # Σ w2 z zᵀ
        self.third = torch.zeros(p, p * p, **zeros)  # Σ w3 z⊗z⊗z, unfolded
        self.cross2 = torch.zeros(vocabulary, p, **zeros)  # Σ w2 c zᵀ
        self.cross3 = torch.zeros(vocabulary, p, **zeros)  # R = Σ w3 c zᵀ
        self.word_sums = torch.zeros(vocabulary, 3, **zeros)  # Σ w1 c, s2 = Σ w2 c, s3 = Σ w3 c
        self.trace2 = torch.zeros(1, **zeros)  # Σ w2 (Σc_i² − L)

    def add(self, batch: CountBatch) -> None:
        batch_counts = batch.counts()
        for name in ("seen", "empty", "m1", "m2", "m3"):
            setattr(self.counts, name, getattr(self.counts, name) + getattr(batch_counts, name))
        z = batch.times(self.basis_products)
        w2, w3 = batch.w2[:, None].to(PRODUCTS), batch.w3[:, None].to(PRODUCTS)
        self.second += z.T @ (w2 * z)
        rows = max(1, PAIR_ELEMENTS // z.shape[1] ** 2)
        for start in range(0, len(z), rows):  # the z⊗z rows in slices of bounded memory
            part = z[start : start + rows]
            pairs = (part[:, :, None] * part[:, None, :]).reshape(len(part), -1)
            self.third += (w3[start : start + rows] * part).T @ pairs
        p = z.shape[1]
        weights = torch.stack([batch.w1, batch.w2, batch.w3], dim=1)
        sums = batch.transpose_times(torch.cat([w2 * z, w3 * z, weights.to(PRODUCTS)], dim=1))
        self.cross2 += sums[:, :p]
        self.cross3 += sums[:, p : 2 * p]
        self.word_sums += sums[:, 2 * p :]
        self.trace2 += batch.w2 @ (batch.squared_norms() - torch.from_numpy(batch.length).to(self.device))

    def merge_hosts(self) -> None:
        (counts, self.second, self.third, self.cross2, self.cross3, self.word_sums,
         self.trace2) = all_reduce([self.counts.as_array(), self.second, self.third, self.cross2, self.cross3,
                                    self.word_sums, self.trace2], self.device)
        self.counts = DocumentCounts.from_array(counts)

    def m1(self) -> torch.Tensor:
        return self.word_sums[:, 0] / self.counts.m1

    def projected_e2(self) -> torch.Tensor:
        """PᵀE2P."""
        diagonal = self.basis.T @ (self.word_sums[:, 1, None] * self.basis)
        return (self.second - diagonal) / self.counts.m2

    def m2_times_basis(self, alpha0: float) -> torch.Tensor:
        """M2·P (V×p), M2 = E2 − α0/(α0+1)·E1E1ᵀ, over the whole vocabulary."""
        m1 = self.m1()
        e2_p = (self.cross2 - self.word_sums[:, 1, None] * self.basis) / self.counts.m2
        return e2_p - (alpha0 / (alpha0 + 1)) * torch.outer(m1, m1 @ self.basis)

    def m2_trace(self, alpha0: float) -> float:
        """tr M2 = tr E2 − α0/(α0+1)·‖E1‖²: all of M2's mass, inside the basis or not."""
        m1 = self.m1()
        return float(self.trace2[0] / self.counts.m2 - (alpha0 / (alpha0 + 1)) * (m1 @ m1))

    def whitened_third(self, whiten: torch.Tensor) -> torch.Tensor:
        """E3(W, W, W) for W = P·whiten (``whiten``: basis columns × rank)."""
        k = whiten.shape[1]
        p = self.basis.shape[1]
        cubic = torch.einsum("ajk,ab,jc,kd->bcd", self.third.reshape(p, p, p), whiten, whiten, whiten)
        words = self.basis @ whiten  # row i: Wᵀe_i
        cross = self.cross3 @ whiten  # row i: Σ w3 c_i Wᵀc
        s3 = self.word_sums[:, 2]
        pair_cross = torch.zeros(k, k, k, dtype=torch.float64, device=whiten.device)
        diagonal = torch.zeros(k, k, k, dtype=torch.float64, device=whiten.device)
        for start in range(0, len(words), V_CHUNK):
            u = words[start : start + V_CHUNK]
            uu = (u[:, :, None] * u[:, None, :]).reshape(len(u), k * k)
            pair_cross += (uu.T @ cross[start : start + V_CHUNK]).reshape(k, k, k)
            diagonal += (uu.T @ (s3[start : start + V_CHUNK, None] * u)).reshape(k, k, k)
        # Σ_i c_i (e_i⊗e_i⊗c + e_i⊗c⊗e_i + c⊗e_i⊗e_i): the three placements of one term.
        corrections = pair_cross + pair_cross.permute(0, 2, 1) + pair_cross.permute(2, 0, 1)
        return (cubic - corrections + 2 * diagonal) / self.counts.m3
