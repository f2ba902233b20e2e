"""Normalisation from a sample of training rows, and folding it back into the weights.

The trainer sees x' = (x − μ)/σ and, for regressors, y' = (y − μ_y)/σ_y, where μ, σ are the
sample's feature means and standard deviations (μ = 0 without ``unbias_data``, σ = 1 without
``normalize_data``; a constant feature keeps σ = 1) and likewise for the label
(``unbias_label`` / ``normalize_label``). A model w', b' trained on those maps back to raw
units exactly: w = σ_y·w'/σ and b = σ_y·(b' − (μ/σ)·w') + μ_y, so the stored model needs no
normalisation step at inference.

The statistics are sums (n, Σx, Σx², Σy, Σy²), merged across hosts with one all-reduce so that
every host normalises identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import Minibatch


def sample_sums(sample: Minibatch | None, feature_dim: int) -> np.ndarray:
    """[n, Σy, Σy², Σx (d), Σx² (d)] in float64 (zeros for an empty sample)."""
    if sample is None or sample.size == 0:
        return np.zeros(3 + 2 * feature_dim)
    x = sample.features
    if sp.issparse(x):
        total = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        squares = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()
    else:
        x64 = x.astype(np.float64)
        total, squares = x64.sum(axis=0), (x64 * x64).sum(axis=0)
    y = np.zeros(0) if sample.labels is None else sample.labels.astype(np.float64)
    return np.concatenate([[sample.size, y.sum(), (y * y).sum()], total, squares])


@dataclass
class Scaler:
    shift: torch.Tensor  # μ (d,)
    inv_scale: torch.Tensor  # 1/σ (d,)
    label_shift: float = 0.0
    label_scale: float = 1.0

    @classmethod
    def from_sums(cls, sums: np.ndarray, feature_dim: int, center: bool, scale: bool, center_label: bool,
                  scale_label: bool, device: torch.device = torch.device("cpu")) -> "Scaler":
        n, y_sum, y_squares = sums[:3]
        total, squares = sums[3 : 3 + feature_dim], sums[3 + feature_dim :]
        mean = total / n
        std = np.sqrt(np.clip(squares / n - mean**2, 0, None))
        std[std < 1e-8 * np.maximum(1.0, np.abs(mean))] = 1.0
        y_mean = y_sum / n
        y_std = float(np.sqrt(max(y_squares / n - y_mean**2, 0.0)))
        return cls(
            shift=torch.as_tensor(mean if center else np.zeros(feature_dim), dtype=torch.float32, device=device),
            inv_scale=torch.as_tensor(1 / std if scale else np.ones(feature_dim), dtype=torch.float32, device=device),
            label_shift=float(y_mean) if center_label else 0.0,
            label_scale=y_std if (scale_label and y_std > 1e-12) else 1.0,
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.inv_scale

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.label_shift) / self.label_scale

    def fold(self, theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Raw-unit (weight (d, K), bias (K,)) of one model's normalised parameters (d + 1, K)."""
        t = theta.double().cpu().numpy()
        w_norm, b_norm = t[:-1], t[-1]
        inv = self.inv_scale.double().cpu().numpy()[:, None]
        weight = self.label_scale * w_norm * inv
        shift = self.shift.double().cpu().numpy()[:, None]
        bias = self.label_scale * (b_norm - (shift * inv * w_norm).sum(0)) + self.label_shift
        return weight, bias
