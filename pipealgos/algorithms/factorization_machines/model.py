"""The trained factorization machine and its predictions.

Arrays, named as in the real container's MXNet params: ``w0_weight`` (1,) the bias,
``w1_weight`` (feature_dim, 1) the linear weights, ``v`` (feature_dim, num_factors) the
factors. ``predict`` touches only the rows of the features a request uses, so its memory
follows the request's non-zeros, not ``feature_dim``; it computes in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipealgos.io.minibatch import Features


@dataclass
class FactorizationMachineModel:
    predictor_type: str
    bias: np.ndarray  # (1,) float32
    linear: np.ndarray  # (feature_dim,) float32
    factors: np.ndarray  # (feature_dim, num_factors) float32

    @property
    def feature_dim(self) -> int:
        return self.linear.shape[0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"w0_weight": self.bias.astype(np.float32).reshape(1),
                "w1_weight": self.linear.astype(np.float32).reshape(-1, 1),
                "v": np.ascontiguousarray(self.factors, dtype=np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> "FactorizationMachineModel":
        return cls(hyperparameters["predictor_type"], arrays["w0_weight"].reshape(1),
                   arrays["w1_weight"].reshape(-1), arrays["v"])

    def margins(self, features: Features) -> np.ndarray:
        """(n,) float64 raw outputs ŷ = w0 + w·x + ½ Σ_f [(Σ_i v_if x_i)² − Σ_i v_if² x_i²]."""
        csr = features.tocsr() if sp.issparse(features) else sp.csr_matrix(np.asarray(features))
        used, columns = np.unique(csr.indices, return_inverse=True)
        # Re-index the request onto the feature rows it uses: memory follows its non-zeros.
        compact = sp.csr_matrix((csr.data.astype(np.float64), columns.reshape(-1), csr.indptr),
                                shape=(csr.shape[0], len(used)))
        factors = self.factors[used].astype(np.float64)
        sums = compact @ factors
        squares = compact.multiply(compact) @ (factors * factors).sum(axis=1)
        linear = compact @ self.linear[used].astype(np.float64)
        return float(self.bias[0]) + linear + 0.5 * ((sums * sums).sum(axis=1) - squares)

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """Regressor: ``score`` = ŷ. Binary: ``score`` = σ(ŷ) and ``predicted_label`` = 1.0
        iff score >= 0.5, as float32."""
        margin = self.margins(features)
        if self.predictor_type == "regressor":
            return {"score": margin.astype(np.float32)}
        score = 0.5 * (1 + np.tanh(0.5 * margin))
        return {"score": score.astype(np.float32), "predicted_label": (score >= 0.5).astype(np.float32)}
