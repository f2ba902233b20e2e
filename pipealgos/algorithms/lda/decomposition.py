"""From the moments to (alpha, beta): whitening, tensor decomposition by ALS, unwhitening.

In whitened coordinates (WᵀM2W = I) the LDA third moment is an orthogonal tensor
T = Σ_i λ_i v_i⊗v_i⊗v_i with λ_i = 2/(α0+2)·sqrt(α0(α0+1)/α_i) (Anandkumar et al. 2014,
theorem 3.5), and β_i ∝ (Wᵀ)⁺ v_i.

Everything here is k'×k' or k'×k'×k' (k' = ceil(1.25 num_topics)) and runs in numpy float64 on
the CPU: these products are too small for a device or for torch's thread pool to pay off (a
13×169 product took 1.4 ms with torch's two threads on a loaded 2-core machine, 0.02 ms in
numpy). Only the unwhitening touches V, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import nnls

Array = npt.NDArray[np.float64]

@dataclass
class Whitening:
    """M2 ≈ U diag(eigenvalues) Uᵀ on its top ``rank`` eigenpairs; W = U diag(eigenvalues)^-1/2.
    ``vectors`` are in the coordinates of the basis P of the last pass (columns × rank)."""

    vectors: Array
    eigenvalues: Array

    @property
    def rank(self) -> int:
        return len(self.eigenvalues)

    @property
    def whiten(self) -> Array:
        return self.vectors / np.sqrt(self.eigenvalues)


def whitening(m2: Array, rank: int) -> Whitening:
    """The top ``rank`` eigenpairs of the symmetric ``m2``, keeping only positive eigenvalues
    above a relative floor (M2 is PSD of rank num_topics in the population; a non-positive
    estimate cannot be whitened)."""
    eigenvalues, vectors = np.linalg.eigh((m2 + m2.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:rank]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    keep = eigenvalues > eigenvalues[0] * 1e-10
    return Whitening(vectors[:, keep], eigenvalues[keep])


@dataclass
class Decomposition:
    """T ≈ Σ_r weights[r]·a_r⊗b_r⊗c_r (factor columns of unit norm)."""

    weights: Array
    factors: tuple[Array, Array, Array]
    residual: float  # ||T − Σ||_F / ||T||_F
    iterations: int

    def symmetric(self, tensor: Array) -> tuple[Array, Array]:
        """(λ, V): one unit vector per component (the three factors sign-aligned and averaged)
        and its eigenvalue λ_r = T(v_r, v_r, v_r) >= 0 (a vector's sign flips a negative one)."""
        a, b, c = self.factors
        b = b * np.where((a * b).sum(0) < 0, -1.0, 1.0)
        c = c * np.where((a * c).sum(0) < 0, -1.0, 1.0)
        v = a + b + c
        v = v / np.maximum(np.linalg.norm(v, axis=0), 1e-300)
        eigen = Unfolded(tensor).values([v, v, v])
        sign = np.where(eigen < 0, -1.0, 1.0)
        return eigen * sign, v * sign


class Unfolded:
    """A 3-way tensor (k×k×k) with its three mode unfoldings (k×k²), so that each ALS
    contraction is one matrix product with a Khatri-Rao product."""

    def __init__(self, tensor: Array) -> None:
        k = tensor.shape[0]
        self.tensor = tensor
        self.modes = (tensor.reshape(k, k * k), tensor.transpose(1, 0, 2).reshape(k, k * k),
                      tensor.transpose(2, 0, 1).reshape(k, k * k))
        self.norm = float(np.linalg.norm(tensor))

    def contract(self, mode: int, factors: list[Array]) -> Array:
        """T contracted with the two other factors' columns: (k×r)."""
        first, second = (factors[m] for m in range(3) if m != mode)
        return self.modes[mode] @ _khatri_rao(first, second)

    def values(self, factors: list[Array]) -> Array:
        """T(a_r, b_r, c_r) for every column r."""
        return (self.contract(0, factors) * factors[0]).sum(0)


def _khatri_rao(first: Array, second: Array) -> Array:
    return (first[:, None, :] * second[None, :, :]).reshape(-1, first.shape[1])


def als(tensor: Unfolded, start: Array, max_iterations: int, tol: float) -> Decomposition:
    """CP decomposition of a 3-way tensor by alternating least squares with orthonormal factors,
    from ``start`` (k×rank, orthonormal columns). Stops when the relative residual changes by
    less than ``tol``.

    The whitened LDA tensor is orthogonal, so each factor is solved under that constraint: the
    least-squares factor given the other two is the polar factor of T's contraction with them
    (orthogonal Procrustes). Measured on a synthetic corpus (20,000 documents, V = 1,000,
    20 topics): unconstrained ALS after 10 such steps wandered in the noise directions of the
    1.25x-rank whitening for all 1,000 iterations, the constrained one converged in 45, with the
    same topics (matched L1 0.073) after the rank-k refinement."""
    rank = start.shape[1]
    factors = [start.copy() for _ in range(3)]
    weights = np.ones(rank)
    previous = residual = float("inf")
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        for mode in range(3):
            product = tensor.contract(mode, factors)
            factors[mode] = orthonormal_columns(product * weights)
            weights = (factors[mode] * product).sum(0)
        residual = float(_residual(tensor, weights, factors))
        if abs(previous - residual) < tol:
            break
        previous = residual
    return Decomposition(weights, tuple(factors), residual, iteration)


def _residual(tensor: Unfolded, weights: Array, factors: list[Array]) -> Array:
    a, b, c = factors
    inner = (weights * tensor.values(factors)).sum()
    gram = (a.T @ a) * (b.T @ b) * (c.T @ c)
    model_norm2 = weights @ gram @ weights
    return np.sqrt(max(tensor.norm**2 - 2 * inner + model_norm2, 0.0)) / tensor.norm


def best_of_restarts(tensor: Array, rank: int, restarts: int, max_iterations: int, tol: float, seed: int,
                     first_start: Array | None = None) -> Decomposition:
    """The decomposition with the smallest residual over ``restarts`` starts: random
    orthonormal ones, except the first when ``first_start`` (k×rank) is given."""
    generator = np.random.default_rng(seed)
    unfolded = Unfolded(tensor)
    best = None
    for restart in range(restarts):
        if restart == 0 and first_start is not None:
            start = orthonormal_columns(first_start)
        else:
            start = np.linalg.qr(generator.standard_normal((tensor.shape[0], rank)))[0]
        found = als(unfolded, start, max_iterations, tol)
        if best is None or found.residual < best.residual:
            best = found
    return best


def orthonormal_columns(matrix: Array) -> Array:
    """The orthonormal matrix nearest to ``matrix`` (its polar factor)."""
    left, _, right = np.linalg.svd(matrix, full_matrices=False)
    return left @ right


def alpha_from_second_moment(topics: Array, basis: Array, m2: Array, alpha0: float) -> Array:
    """α fitted to M2 = Σ_i α_i/(α0(α0+1))·β_iβ_iᵀ by non-negative least squares over the
    candidate topics (rows of ``topics``, V-vectors), in the coordinates of the basis P
    where ``m2`` (p×p) lives.

    Why not theorem 3.5's α_i from λ_i: whitening to rank k' = 1.25·num_topics takes
    k' − num_topics directions from the noise of M2. ALS still finds components there, with
    small λ_i (the third moment is nearly zero in them), so λ-derived α_i are the *largest*
    (α ∝ 1/λ²) and "keep the largest α" keeps noise: measured on a synthetic corpus (5,000
    documents, V = 500, 10 topics) the three largest-α of 13 components matched no true topic
    (L1 1.22, 0.29, 0.48 against 0.05-0.15 for the real ones). Fitted to M2, a noise component
    explains almost none of it and gets α near 0."""
    projected = topics @ basis  # k'×p
    design = np.stack([np.outer(mu, mu).ravel() for mu in projected], axis=1)
    weights = nnls(design, m2.ravel(), maxiter=50 * design.shape[1])[0]
    return weights * alpha0 * (alpha0 + 1)


def topics_from_components(unwhiten: Array, vectors: Array) -> Array:
    """β (components × V): each (Wᵀ)⁺v_r, ``unwhiten`` being (Wᵀ)⁺ in word coordinates (V×rank),
    negative entries clipped, normalised onto the simplex (the paper's projection). A component
    whose mass is all negative gets its sign flipped first.

    The caller passes M2·W: when W whitens M2 (WᵀM2W = I on M2's range), M2·W = (Wᵀ)⁺. Computed
    from the whole corpus's M2·P over the whole vocabulary, it is not confined to span(P) as
    P·(WᵀP)⁺ would be: with P from the first 44,000 documents of a 200,000-document corpus
    (V = 50,000, 20 topics) matched L1 of β was 0.151 this way against 0.317 within span(P)
    (0.156 with P from three streamed passes)."""
    raw = (unwhiten @ vectors).T  # components × V
    flip = np.where(raw.sum(1, keepdims=True) < 0, -1.0, 1.0)
    clipped = np.maximum(raw * flip, 0)
    return clipped / np.maximum(clipped.sum(1, keepdims=True), 1e-300)
