"""The trained model as the platform stores and serves it."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from pipealgos.io import DataError
from pipealgos.io.minibatch import Features

from .forest import ARRAY_NAMES, Forest


class RandomCutForestModel:
    """A forest (see :mod:`.forest`); ``predict`` gives each row's anomaly ``score``."""

    def __init__(self, forest: Forest) -> None:
        self.forest = forest

    @property
    def feature_dim(self) -> int:
        return self.forest.feature_dim

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.forest.arrays()

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any] | None = None
                    ) -> "RandomCutForestModel":
        missing = [name for name in ARRAY_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"random cut forest model: arrays {', '.join(missing)} are missing")
        return cls(Forest(**{name: arrays[name] for name in ARRAY_NAMES}))

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """``score`` (float32, one per row) of a dense array or CSR matrix of any number of rows."""
        if features.shape[1] != self.feature_dim:
            raise DataError(f"the records have {features.shape[1]} features but the model was trained on "
                            f"feature_dim={self.feature_dim}", fix=f"Send {self.feature_dim} features per record")
        dense = features.toarray() if sp.issparse(features) else features
        with np.errstate(over="ignore"):  # checked after the cast: 1e39 is inf in float32, refused below
            dense = np.asarray(dense, dtype=np.float32)
        finite = np.isfinite(dense).all(axis=1)
        if not finite.all():
            raise DataError("a feature is NaN or infinite (in float32)", record=int(np.flatnonzero(~finite)[0]),
                            fix="Remove or impute non-finite values")
        return {"score": self.forest.score(dense)}
