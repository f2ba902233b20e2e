"""Linear learner in SageMaker's format: ``model_algo-1`` is a zip of an MXNet Module.

Members (algorithms.md §0.5 and §5):

* ``manifest.json``: ``{"additional-params.json": "json", "mx-mod": "mxnet_module", "version": 1}``;
* ``additional-params.json``: ``threshold``, ``loss_type``, ``predictor_type``, ``metrics_params``;
* ``mx-mod-symbol.json``: the graph ``data · fc0_weight + fc0_bias`` (nodes ``data``,
  ``fc0_weight``, ``dot``, ``fc0_bias``, ``broadcast_add`` and an identity output);
* ``mx-mod-0000.params``: an NDArray file with ``arg:fc0_weight`` (feature_dim, K) and
  ``arg:fc0_bias`` (1, K); K = 1, or num_classes for multiclass.

Choices where no public source settles the semantics (written here so they are one place):

* The graph's output is the **margin** x·w + b; the score is derived from it by ``loss_type``
  (σ for ``logistic``, softmax for ``softmax_loss``, the margin itself otherwise). Our graph
  ends in an identity node, so a host that reads ``loss_type`` applies the link exactly once.
* ``threshold`` is on the **score**: a probability for ``logistic``, a margin for
  ``hinge_loss``; ``predicted_label`` is 1 when the score is above it. Our model keeps its
  threshold on the margin, so it is converted (logit / σ) both ways.
* The weights map the raw (un-normalised) features to the label's own units: the graph has
  no normalisation node, so there is nowhere else for a feature or label scaler to be.
* ``metrics_params`` is written empty (its contents are not established) and ignored when read;
  non-binary models get ``threshold`` 0.5, which nothing reads.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from pipealgos.io import DataError
from pipealgos.io.mxnet_module import (MODEL_FILE, Node, json_member, model_file, read_zip, require_finite,
                                       shape_attr, symbol_json, write_zip, zip_member, zip_names)
from pipealgos.io.ndarray import read_ndarrays, write_ndarrays

from .params import resolve_loss
from .predictors import LOSSES

ZIP_MANIFEST = "manifest.json"
ADDITIONAL_PARAMS = "additional-params.json"
SYMBOL = "mx-mod-symbol.json"
PARAMS = "mx-mod-0000.params"
MANIFEST = {"additional-params.json": "json", "mx-mod": "mxnet_module", "version": 1}
WEIGHT, BIAS = "arg:fc0_weight", "arg:fc0_bias"
UNUSED_THRESHOLD = 0.5


def to_sagemaker(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> dict[str, bytes]:
    predictor = hyperparameters["predictor_type"]
    loss = resolve_loss(predictor, hyperparameters.get("loss", "auto"))
    weight = arrays["weight"].astype(np.float32)
    bias = arrays["bias"].astype(np.float32).reshape(1, -1)
    threshold = UNUSED_THRESHOLD
    if predictor == "binary_classifier":
        threshold = score_threshold(float(arrays["threshold"][0]), loss)
    additional = {"threshold": threshold, "loss_type": loss, "predictor_type": predictor, "metrics_params": {}}
    members = {
        ZIP_MANIFEST: json.dumps(MANIFEST).encode(),
        ADDITIONAL_PARAMS: json.dumps(additional).encode(),
        SYMBOL: symbol(weight.shape).encode(),
        PARAMS: write_ndarrays({WEIGHT: weight, BIAS: bias}),
    }
    return {MODEL_FILE: write_zip(members)}


def symbol(weight_shape: tuple[int, int]) -> str:
    """The module's graph: margin = dot(data, fc0_weight) + fc0_bias, as one identity output."""
    nodes = [
        Node("null", "data"),
        Node("null", "fc0_weight", attrs=shape_attr(weight_shape)),
        Node("dot", "dot0", (0, 1)),
        Node("null", "fc0_bias", attrs=shape_attr((1, weight_shape[1]))),
        Node("broadcast_add", "broadcast_add0", (2, 3)),
        Node("_copy", "linear_output", (4,)),
    ]
    return symbol_json(nodes, heads=[len(nodes) - 1])


def is_sagemaker(files: dict[str, bytes]) -> bool:
    return {ADDITIONAL_PARAMS, PARAMS} <= zip_names(files)


def from_sagemaker(files: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    members = read_zip(model_file(files), MODEL_FILE)
    additional = json_member(members, ADDITIONAL_PARAMS, MODEL_FILE)
    predictor, loss = _predictor_and_loss(additional)
    params_source = f"{MODEL_FILE} member {PARAMS}"
    params = read_ndarrays(zip_member(members, PARAMS, MODEL_FILE), params_source)
    if not isinstance(params, dict) or not {WEIGHT, BIAS} <= set(params):
        found = sorted(params) if isinstance(params, dict) else "an unnamed list"
        raise DataError(f"holds {found}, not {WEIGHT} and {BIAS}", source=params_source)
    weight = require_finite(params[WEIGHT], WEIGHT, params_source)
    bias = require_finite(params[BIAS], BIAS, params_source)
    outputs = weight.shape[1] if weight.ndim == 2 else 0
    expected = (outputs >= 2) if predictor == "multiclass_classifier" else (outputs == 1)
    if not expected or bias.size != outputs:
        raise DataError(f"{WEIGHT} has shape {weight.shape} and {BIAS} {bias.shape}: a {predictor} has "
                        f"(feature_dim, {'num_classes' if predictor == 'multiclass_classifier' else 1}) and "
                        "(1, the same)", source=params_source)
    arrays = {"weight": weight, "bias": bias.reshape(-1)}
    hyperparameters = {"predictor_type": predictor, "loss": loss, "feature_dim": weight.shape[0]}
    if predictor == "binary_classifier":
        arrays["threshold"] = require_finite([margin_threshold(additional.get("threshold"), loss)], "threshold",
                                             f"{MODEL_FILE} member {ADDITIONAL_PARAMS}")
    elif predictor == "multiclass_classifier":
        hyperparameters["num_classes"] = outputs
    return arrays, hyperparameters


def _predictor_and_loss(additional: dict[str, Any]) -> tuple[str, str]:
    source = f"{MODEL_FILE} member {ADDITIONAL_PARAMS}"
    predictor = additional.get("predictor_type")
    if predictor not in LOSSES:
        raise DataError(f"predictor_type {json.dumps(predictor)} is not one of {sorted(LOSSES)}", source=source)
    loss = additional.get("loss_type") or "auto"
    if loss not in LOSSES[predictor]:
        raise DataError(f"loss_type {json.dumps(loss)} is not a loss of a {predictor} "
                        f"(one of {', '.join(LOSSES[predictor][1:])})", source=source)
    return predictor, resolve_loss(predictor, loss)


def score_threshold(margin: float, loss: str) -> float:
    """The threshold on the score for our threshold on the margin."""
    return 1.0 / (1.0 + math.exp(-margin)) if loss == "logistic" else margin


def margin_threshold(threshold: Any, loss: str) -> float:
    """Our threshold on the margin for additional-params.json's ``threshold`` on the score (a
    probability in (0, 1) for ``logistic``). A missing one is the score's midpoint: 0.5, or 0."""
    source = f"{MODEL_FILE} member {ADDITIONAL_PARAMS}"
    if threshold is None:
        return 0.0
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise DataError(f"threshold {json.dumps(threshold)} is not a finite number", source=source)
    if loss != "logistic":
        return float(threshold)
    if not 0.0 < threshold < 1.0:
        raise DataError(f"threshold {threshold} is not a probability strictly between 0 and 1, as a logistic "
                        "model's must be", source=source)
    return math.log(threshold / (1.0 - threshold))
