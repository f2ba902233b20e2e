"""The trained linear learner: one linear model, normalisation already folded into it.

Arrays: ``weight`` (feature_dim, K) and ``bias`` (K,) map raw features to the margin in the
label's own units (K = 1, or num_classes for multiclass); binary classifiers also keep
``threshold`` (1,), the calibrated decision threshold on the margin. The loss (hence what
``score`` means) comes from the stored hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipealgos.io.minibatch import Features

from .params import resolve_loss


@dataclass
class LinearLearnerModel:
    predictor_type: str
    loss: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: float = 0.0

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)}
        if self.predictor_type == "binary_classifier":
            arrays["threshold"] = np.array([self.threshold], dtype=np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> "LinearLearnerModel":
        """``hyperparameters`` as resolved by training; a model stored before resolved values
        were kept may still say ``loss: auto``, which resolves as it did then."""
        predictor = hyperparameters["predictor_type"]
        threshold = float(arrays["threshold"][0]) if "threshold" in arrays else 0.0
        return cls(predictor, resolve_loss(predictor, hyperparameters.get("loss", "auto")), arrays["weight"],
                   arrays["bias"], threshold)

    def margins(self, features: Features) -> np.ndarray:
        """(n, K) float64 raw model outputs."""
        return np.asarray(features @ self.weight.astype(np.float64), dtype=np.float64) + self.bias

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """``score``: probability (logistic: (n,), softmax: (n, num_classes)), raw margin (hinge)
        or the prediction (regressor). ``predicted_label`` (classifiers only): 0/1 from the
        calibrated threshold, or the arg-max class, as float32."""
        margin = self.margins(features)
        if self.predictor_type == "regressor":
            return {"score": margin[:, 0].astype(np.float32)}
        if self.predictor_type == "multiclass_classifier":
            shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            return {"score": probabilities.astype(np.float32),
                    "predicted_label": margin.argmax(axis=1).astype(np.float32)}
        m = margin[:, 0]
        score = 0.5 * (1 + np.tanh(0.5 * m)) if self.loss == "logistic" else m
        return {"score": score.astype(np.float32), "predicted_label": (m > self.threshold).astype(np.float32)}
