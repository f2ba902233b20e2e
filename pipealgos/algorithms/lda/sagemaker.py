"""LDA in SageMaker's format: ``model_algo-1`` is an NDArray file, an unnamed list
``[alpha (num_topics,), beta (num_topics, feature_dim)]`` (algorithms.md §3), the arrays
:class:`~.model.LDAModel` keeps under the same names."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipealgos.io import DataError
from pipealgos.io.mxnet_module import MODEL_FILE, ndarray_model, ndarray_model_or_none, require_finite
from pipealgos.io.ndarray import write_ndarrays


def to_sagemaker(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> dict[str, bytes]:
    return {MODEL_FILE: write_ndarrays([arrays["alpha"].astype(np.float32), arrays["beta"].astype(np.float32)])}


def is_sagemaker(files: dict[str, bytes]) -> bool:
    saved = ndarray_model_or_none(files)
    return isinstance(saved, list) and len(saved) == 2 and saved[0].ndim == 1 and saved[1].ndim == 2


def from_sagemaker(files: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    saved = ndarray_model(files)
    if not is_sagemaker(files) or saved[0].shape[0] != saved[1].shape[0]:
        found = f"named arrays {sorted(saved)}" if isinstance(saved, dict) else \
            f"a list of arrays of shapes {[a.shape for a in saved]}"
        raise DataError(f"holds {found}, not LDA's list [alpha (num_topics,), beta (num_topics, feature_dim)]",
                        source=MODEL_FILE, fix="name the model's algorithm if it is not LDA")
    alpha, beta = require_finite(saved[0], "alpha", MODEL_FILE), require_finite(saved[1], "beta", MODEL_FILE)
    return {"alpha": alpha, "beta": beta}, {"feature_dim": beta.shape[1], "num_topics": beta.shape[0]}
