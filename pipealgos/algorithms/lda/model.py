"""The trained LDA model: ``alpha`` (num_topics,) and ``beta`` (num_topics, feature_dim),
as SageMaker's ``model_algo-1`` NDArray list ``[alpha, beta]`` holds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipealgos.io.minibatch import Features

from .inference import topic_mixtures
from .moments import check_counts


@dataclass
class LDAModel:
    """``alpha``: Dirichlet prior per topic (> 0); ``beta``: one row per topic, each a
    distribution over the vocabulary. Topics are ordered by decreasing alpha."""

    alpha: np.ndarray
    beta: np.ndarray

    @property
    def feature_dim(self) -> int:
        return self.beta.shape[1]

    @property
    def num_topics(self) -> int:
        return len(self.alpha)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"alpha": self.alpha.astype(np.float32), "beta": self.beta.astype(np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any] | None = None) -> "LDAModel":
        return cls(np.asarray(arrays["alpha"], np.float64), np.asarray(arrays["beta"], np.float64))

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """``topic_mixture`` per document (see :mod:`.inference`)."""
        counts = sp.csr_matrix(features, dtype=np.float64)
        check_counts(counts, first_record=0, channel=None)
        return {"topic_mixture": topic_mixtures(counts, self.alpha, self.beta).astype(np.float32)}
