"""PCA as SageMaker's ``pca`` container computes it: streamed summaries, then one decomposition.

* ``regular``: accumulate n, Σx and Σxᵀx (float64); C = Σxᵀx − (1/n)(Σx)ᵀ(Σx) (the mean
  term only with ``subtract_mean``); eigendecomposition of C. Exact; needs d² memory.
* ``randomized``: ℓ = num_components + extra_components (−1 ⇒ max(10, num_components)).
  Each minibatch X_t (b×d) is sketched with a random ±1 matrix H_t (ℓ×b): B = Σ H_t X_t,
  h = Σ H_t·1, s = Σx, n. Then C = B − (1/n) h sᵀ (the sketch of the centred data) and the
  top right singular vectors of C approximate the principal directions. Since E[HᵀH] = ℓ·I,
  singular values of C are divided by √ℓ to estimate the data's; that estimate has a relative
  spread of about 1/√(2ℓ) (so raise ``extra_components`` when the values matter).

Both summaries are plain sums, so hosts (and minibatches) merge by adding them
(:meth:`PCAStats.merge`, or one all-reduce). The model follows the real artifact: ``s``
(singular values of the centred data, **ascending**), ``v`` (feature_dim × num_components,
columns in the same order) and ``mean`` (1 × feature_dim, only with ``subtract_mean``).
Component signs are normalised so that each column's largest-magnitude entry is positive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import DataError
from pipealgos.io.minibatch import Features
from pipealgos.io.mxnet_module import MODEL_FILE, ndarray_model, ndarray_model_or_none, require_finite
from pipealgos.io.ndarray import write_ndarrays

from . import feed
from .base import Params, TrainingContext, report_test_channel
from .collectives import all_reduce
from .tensors import to_torch

NAME = "pca"
ROWS_PER_LAUNCH_BYTES = 64 << 20  # a device launch's rows in regular mode (see _rows_per_launch)


def sketch_size(params: Params) -> int:
    """ℓ of randomized mode: num_components + extra_components (−1 ⇒ max(10, num_components))."""
    extra = params.extra_components
    return params.num_components + (max(10, params.num_components) if extra == -1 else extra)


@dataclass
class PCAStats:
    """Mergeable sums over the rows seen so far (float64).

    ``gram`` = Σxᵀx (regular mode); ``sketch`` = Σ H_t X_t and ``sketch_ones`` = Σ H_t·1
    (randomized mode)."""

    n: int
    total: np.ndarray
    gram: np.ndarray | None = None
    sketch: np.ndarray | None = None
    sketch_ones: np.ndarray | None = None
    batches: int = field(default=0, compare=False)

    @classmethod
    def empty(cls, params: Params) -> "PCAStats":
        d = params.feature_dim
        if params.algorithm_mode == "regular":
            return cls(0, np.zeros(d), gram=np.zeros((d, d)))
        ell = sketch_size(params)
        return cls(0, np.zeros(d), sketch=np.zeros((ell, d)), sketch_ones=np.zeros(ell))

    def merge(self, other: "PCAStats") -> "PCAStats":
        """The statistics of both row sets together (a pure function)."""
        def add(a, b):
            return None if a is None else a + b
        return PCAStats(
            self.n + other.n, self.total + other.total, add(self.gram, other.gram),
            add(self.sketch, other.sketch), add(self.sketch_ones, other.sketch_ones),
            self.batches + other.batches,
        )

    def arrays(self) -> list[np.ndarray]:
        parts = [np.array([float(self.n)]), self.total]
        parts += [a for a in (self.gram, self.sketch, self.sketch_ones) if a is not None]
        return parts


class PCAAccumulator:
    """Adds minibatches into :class:`PCAStats`.

    ``add`` takes host features (numpy / scipy: the CPU path, below) or a tensor on the device
    (the device path: every sum stays on the device, nothing is read back before
    :meth:`result`, so a GPU never waits for the host).

    Regular mode, dense rows: each minibatch's Gram matrix is one float32 product, added
    into float64 sums. To keep float32 exact enough, rows are first shifted by a fixed
    vector s (the first minibatch's mean), so the products are of deviations rather than of
    raw values, and a column of ones is appended: the product [y, 1]ᵀ[y, 1] of y = x − s then
    holds Σyᵀy, Σy and n at once. :meth:`result` turns that back into Σx and Σxᵀx in float64
    (Σxᵀx = Σyᵀy + s(Σy)ᵀ + (Σy)sᵀ + n ssᵀ), so merging across hosts and the decomposition
    are unchanged. Two to three times less work per row than a float64 product, and no
    float64 copy of the minibatch. On the CPU the shift is numpy's (single-threaded, see
    ``nearest_center``), on a device torch's. Sparse minibatches are summed exactly, in
    float64: with scipy on the CPU; on a device regular mode densifies each minibatch there
    (its Gram matrix is d × d anyway) and randomized mode adds each non-zero's column with
    ``index_add_`` (float64 atomics: the order of additions may differ between runs, far
    below float32 rounding). Randomized mode's signs are drawn on the host in both paths
    from the same generator, one (ℓ × rows) draw per minibatch, so CPU and CUDA build the
    same sketch from the same minibatches."""

    def __init__(self, params: Params, device: torch.device, seed: int = 0) -> None:
        self.params = params
        self.device = device
        self.stats = PCAStats.empty(params)
        self._rng = np.random.default_rng(seed)
        d = params.feature_dim
        self._shift: np.ndarray | torch.Tensor | None = None  # float32 (d,)
        self._shifted_gram = torch.zeros(d + 1, d + 1, dtype=torch.float64, device=device)
        self._rows = np.ones((0, d + 1), dtype=np.float32)  # [x − s, 1] of the current minibatch
        self._device_sums: dict[str, torch.Tensor] = {}  # PCAStats fields summed on the device

    def add(self, features: Features | torch.Tensor) -> None:
        stats = self.stats
        stats.n += features.shape[0]
        stats.batches += 1
        if torch.is_tensor(features):
            self._add_on_device(features)
        elif stats.gram is not None and not sp.issparse(features):
            self._add_dense_gram(np.asarray(features, dtype=np.float32))
        else:
            self._add_on_host(features)

    def _add_on_host(self, features: Features) -> None:
        stats = self.stats
        stats.total += np.asarray(features.sum(axis=0, dtype=np.float64)).ravel()
        if stats.gram is not None:
            csr = features.astype(np.float64)
            stats.gram += (csr.T @ csr).toarray()
        else:
            signs = self._signs(features.shape[0])
            if sp.issparse(features):
                stats.sketch += np.asarray((features.T.astype(np.float64) @ signs.T).T)
            else:
                h = torch.from_numpy(signs).to(self.device)
                stats.sketch += (h @ to_torch(features, self.device, torch.float64)).cpu().numpy()

    def _signs(self, rows: int) -> np.ndarray:
        """The minibatch's ±1 matrix H_t (ℓ × rows, float64); Σ H_t·1 is added on the host."""
        signs = self._rng.integers(0, 2, size=(sketch_size(self.params), rows)) * 2.0 - 1.0
        self.stats.sketch_ones += signs.sum(axis=1)
        return signs

    def _add_dense_gram(self, x: np.ndarray) -> None:
        n, d = x.shape
        if self._shift is None:
            self._shift = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        if len(self._rows) < n:
            self._rows = np.ones((n, d + 1), dtype=np.float32)
        rows = self._rows[:n]
        np.subtract(x, self._shift, out=rows[:, :d])
        y = torch.from_numpy(rows).to(self.device)
        self._shifted_gram += (y.T @ y).double()

    def _add_on_device(self, x: torch.Tensor) -> None:
        n, d = x.shape
        if self.stats.gram is not None and x.layout == torch.strided:
            if self._shift is None:
                self._shift = x.mean(0, dtype=torch.float64).float()
            rows = torch.ones(n, d + 1, dtype=torch.float32, device=x.device)
            torch.sub(x, self._shift, out=rows[:, :d])
            self._shifted_gram += (rows.T @ rows).double()
            return
        sums = self._device_sums or self._zero_device_sums()
        if self.stats.gram is not None:  # sparse rows, regular mode
            dense = x.to_dense().double()
            sums["total"] += dense.sum(0)
            sums["gram"] += dense.T @ dense
            return
        h = feed.array_to_device(self._signs(n), x.device)
        if x.layout == torch.strided:
            sums["total"] += x.sum(0, dtype=torch.float64)
            sums["sketch"] += h @ x.double()
            return
        values, columns = x.values().double(), x.col_indices()
        row_of_value = torch.repeat_interleave(torch.arange(n, device=x.device), x.crow_indices().diff(),
                                               output_size=len(columns))  # the size given: no read-back
        sums["total"].index_add_(0, columns, values)
        sums["sketch"].index_add_(1, columns, h[:, row_of_value] * values)

    def _zero_device_sums(self) -> dict[str, torch.Tensor]:
        for name in ("total", "gram", "sketch"):
            host = getattr(self.stats, name)
            if host is not None:
                self._device_sums[name] = torch.zeros(host.shape, dtype=torch.float64, device=self.device)
        return self._device_sums

    def result(self) -> PCAStats:
        """The statistics so far, with the shifted dense sums folded into Σx and Σxᵀx and the
        device's sums added (the one read-back)."""
        stats = self.stats
        for name, on_device in self._device_sums.items():
            setattr(stats, name, getattr(stats, name) + on_device.cpu().numpy())
            on_device.zero_()
        if stats.gram is not None and self._shift is not None:
            d = self.params.feature_dim
            g = self._shifted_gram.cpu().numpy()
            shift = np.asarray(self._shift.cpu() if torch.is_tensor(self._shift) else self._shift, dtype=np.float64)
            sum_y, n = g[d, :d], g[d, d]
            stats.total += sum_y + n * shift
            stats.gram += g[:d, :d] + np.outer(shift, sum_y) + np.outer(sum_y, shift) + n * np.outer(shift, shift)
            self._shift = None
            self._shifted_gram.zero_()
        return stats


@dataclass
class PCAModel:
    """``s`` (k,) ascending; ``v`` (d, k) in the same order; ``mean`` (1, d) or None."""

    s: np.ndarray
    v: np.ndarray
    mean: np.ndarray | None

    @property
    def feature_dim(self) -> int:
        return self.v.shape[0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"s": self.s.astype(np.float32), "v": self.v.astype(np.float32)}
        if self.mean is not None:
            arrays["mean"] = self.mean.astype(np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any] | None = None) -> "PCAModel":
        return cls(arrays["s"], arrays["v"], arrays.get("mean"))

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """``projection`` = (x − mean)·v, one row of num_components per input row."""
        projected = features @ self.v
        projected = np.asarray(projected, dtype=np.float64)
        if self.mean is not None:
            projected = projected - (self.mean @ self.v)
        return {"projection": projected.astype(np.float32)}


def _normalise_signs(v: np.ndarray) -> np.ndarray:
    pivots = np.abs(v).argmax(axis=0)
    signs = np.sign(v[pivots, np.arange(v.shape[1])])
    signs[signs == 0] = 1
    return v * signs


def finalize(stats: PCAStats, params: Params) -> PCAModel:
    """The model from merged statistics."""
    if stats.n == 0:
        raise DataError("the train channel holds no records", channel="train",
                        fix="Provide at least one record (check the S3 prefix or the input directory)")
    k = params.num_components
    mean = stats.total / stats.n
    if stats.gram is not None:
        cov = stats.gram - (np.outer(stats.total, mean) if params.subtract_mean else 0)
        cov = (cov + cov.T) / 2
        eigenvalues, vectors = np.linalg.eigh(cov)  # ascending
        s = np.sqrt(np.clip(eigenvalues[-k:], 0, None))
        v = vectors[:, -k:]
    else:
        sketch = stats.sketch
        if params.subtract_mean:
            sketch = sketch - np.outer(stats.sketch_ones, mean)
        _, singular, vt = np.linalg.svd(sketch, full_matrices=False)  # descending
        s = (singular[:k] / np.sqrt(sketch_size(params)))[::-1]
        v = vt[:k].T[:, ::-1]
    return PCAModel(np.ascontiguousarray(s), np.ascontiguousarray(_normalise_signs(v)),
                    mean[None, :] if params.subtract_mean else None)


def _merge_hosts(stats: PCAStats, device: torch.device) -> PCAStats:
    """The statistics of every host's rows (one all-reduce of the sums)."""
    n, total, *rest = all_reduce(stats.arrays(), device)
    merged = PCAStats(int(round(n[0])), total)
    if stats.gram is not None:
        merged.gram = rest[0]
    else:
        merged.sketch, merged.sketch_ones = rest
    return merged


def _rows_per_launch(params: Params) -> int | None:
    """Regular mode's sums do not depend on the minibatches: on a device, stack them into
    launches of about 64 MB of float32 rows. Randomized mode keeps the user's minibatches (its
    signs are drawn per minibatch, as on the CPU)."""
    if params.algorithm_mode != "regular":
        return None
    return max(params.mini_batch_size, ROWS_PER_LAUNCH_BYTES // (4 * params.feature_dim))


def train(params: Params, ctx: TrainingContext) -> PCAModel:
    """Stream the train channel once, merge across hosts, decompose."""
    acc = PCAAccumulator(params, ctx.device, seed=ctx.seed + ctx.rank)
    if params.algorithm_mode == "randomized":
        ctx.resolve("extra_components", sketch_size(params) - params.num_components)
    started = time.perf_counter()
    minibatches = ctx.channels.minibatches("train", 0, params.mini_batch_size, params.feature_dim)
    on_host = feed.computes_on_host(ctx.device)
    for batch in ctx.feed(minibatches, rows_per_launch=_rows_per_launch(params)):
        acc.add(batch.host.features if on_host else batch.features)
    stats = acc.result()
    elapsed = time.perf_counter() - started
    ctx.report.info(f"host {ctx.rank}: {stats.n} records in {stats.batches} minibatches")
    if stats.n:
        ctx.report.throughput(stats.n / max(elapsed, 1e-9))
    if ctx.distributed:
        stats = _merge_hosts(stats, ctx.device)
    model = finalize(stats, params)
    ctx.report.progress(100.0)
    report_test_channel(ctx, lambda: _report_test(model, params, ctx))
    return model


def _report_test(model: PCAModel, params: Params, ctx: TrainingContext) -> None:
    """Mean squared reconstruction error on the test channel (a pipealgos addition: the real
    container reports no PCA metric)."""
    total, count = 0.0, 0
    for batch in ctx.channels.minibatches("test", 0, params.mini_batch_size, params.feature_dim):
        x = batch.dense().astype(np.float64)
        centred = x - model.mean if model.mean is not None else x
        residual = centred - (centred @ model.v) @ model.v.T
        total += float((residual**2).sum())
        count += len(x)
    if count:
        ctx.report.quality("test", "reconstruction_error", total / count)


# ---------------------------------------------------------------------------------------------
# SageMaker's format: model_algo-1 is an NDArray file of named s, v and mean (algorithms.md §1)

SAGEMAKER_ARRAYS = ("s", "v", "mean")


def to_sagemaker(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> dict[str, bytes]:
    """The files of SageMaker's ``model.tar.gz`` for this model: its arrays, same names and order."""
    return {MODEL_FILE: write_ndarrays({name: arrays[name].astype(np.float32) for name in SAGEMAKER_ARRAYS
                                        if name in arrays})}


def is_sagemaker(files: dict[str, bytes]) -> bool:
    saved = ndarray_model_or_none(files)
    return isinstance(saved, dict) and {"s", "v"} <= set(saved) <= set(SAGEMAKER_ARRAYS)


def from_sagemaker(files: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and hyperparameters from SageMaker's PCA ``model_algo-1``. ``s`` may hold NaN (the
    real container's smallest singular value can be the root of a slightly negative
    eigenvalue): predictions use ``v`` and ``mean`` only, which must be finite."""
    saved = ndarray_model(files)
    if not is_sagemaker(files):
        found = sorted(saved) if isinstance(saved, dict) else f"an unnamed list of {len(saved)} arrays"
        raise DataError(f"holds {found}, not PCA's named arrays s, v and mean", source=MODEL_FILE,
                        fix="name the model's algorithm if it is not PCA")
    v = require_finite(saved["v"], "v", MODEL_FILE)
    if v.ndim != 2 or saved["s"].shape != (v.shape[1],):
        raise DataError(f"v has shape {v.shape} and s {saved['s'].shape}: expected (feature_dim, "
                        "num_components) and (num_components,)", source=MODEL_FILE)
    arrays = {"s": saved["s"].astype(np.float32), "v": v}
    if "mean" in saved:
        arrays["mean"] = require_finite(saved["mean"], "mean", MODEL_FILE)
        if arrays["mean"].shape != (1, v.shape[0]):
            raise DataError(f"mean has shape {arrays['mean'].shape}, expected (1, {v.shape[0]})", source=MODEL_FILE)
    return arrays, {"feature_dim": v.shape[0], "num_components": v.shape[1], "subtract_mean": "mean" in saved}
