"""Factorization machines in SageMaker's format: ``model_algo-1`` is a zip of ``symbol.json``,
``params`` and ``meta.json`` (algorithms.md §4).

* ``params``: an NDArray dict ``arg:w0_weight`` (1,), ``arg:w1_weight`` (feature_dim, 1) and
  ``arg:v`` (feature_dim, num_factors), our arrays under the Module's ``arg:`` prefix (names
  without it are read too).
* ``meta.json``: ``training_parameters`` (hyperparameters as strings; ``feature_dim`` and
  ``predictor_type`` are what reading needs: no array says whether the model is a classifier).
* ``symbol.json``: ŷ = w0 + x·w1 + ½ Σ_f [(x·v)² − x²·v²]_f, ending in an identity node: as for
  linear learner (see its ``sagemaker`` module), the graph gives the raw output and the
  predictor type in meta.json says whether the score is σ(ŷ).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipealgos.io import DataError
from pipealgos.io.mxnet_module import (MODEL_FILE, Node, json_member, model_file, module_params, module_zip_holds,
                                       params_file, read_zip, require_finite, shape_attr, symbol_json, write_zip)

META, SYMBOL, PARAMS = "meta.json", "symbol.json", "params"
ARRAYS = ("w0_weight", "w1_weight", "v")
PREDICTORS = ("binary_classifier", "regressor")


def to_sagemaker(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> dict[str, bytes]:
    parameters = {name: value if isinstance(value, str) else json.dumps(value)
                  for name, value in hyperparameters.items()}
    parameters["feature_dim"] = str(arrays["v"].shape[0])
    members = {SYMBOL: symbol(arrays["v"].shape).encode(),
               PARAMS: params_file({name: arrays[name] for name in ARRAYS}),
               META: json.dumps({"training_parameters": parameters}).encode()}
    return {MODEL_FILE: write_zip(members)}


def symbol(factors_shape: tuple[int, int]) -> str:
    """The degree-2 FM graph over ``data`` (n, feature_dim)."""
    nodes = [
        Node("null", "data"),                                              # 0
        Node("null", "w0_weight", attrs=shape_attr((1,))),                 # 1
        Node("null", "w1_weight", attrs=shape_attr((factors_shape[0], 1))),  # 2
        Node("null", "v", attrs=shape_attr(factors_shape)),                # 3
        Node("dot", "linear", (0, 2)),                                     # 4  x·w1
        Node("dot", "xv", (0, 3)),                                         # 5  x·v
        Node("square", "xv_squared", (5,)),                                # 6  (x·v)²
        Node("square", "x_squared", (0,)),                                 # 7
        Node("square", "v_squared", (3,)),                                 # 8
        Node("dot", "x2v2", (7, 8)),                                       # 9  x²·v²
        Node("elemwise_sub", "pair_terms", (6, 9)),                        # 10
        Node("sum", "pair_sum", (10,), {"axis": "1", "keepdims": "True"}),  # 11
        Node("_mul_scalar", "pairwise", (11,), {"scalar": "0.5"}),          # 12
        Node("elemwise_add", "linear_plus_pairwise", (4, 12)),             # 13
        Node("broadcast_add", "fm", (13, 1)),                              # 14 + w0
        Node("_copy", "fm_output", (14,)),                                 # 15
    ]
    return symbol_json(nodes, heads=[len(nodes) - 1])


def is_sagemaker(files: dict[str, bytes]) -> bool:
    return module_zip_holds(files, {META, PARAMS}, set(ARRAYS))


def from_sagemaker(files: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    members = read_zip(model_file(files), MODEL_FILE)
    parameters = json_member(members, META, MODEL_FILE).get("training_parameters")
    predictor = parameters.get("predictor_type") if isinstance(parameters, dict) else None
    if predictor not in PREDICTORS:
        raise DataError(f"training_parameters.predictor_type is {json.dumps(predictor)}, not one of {list(PREDICTORS)}",
                        source=f"{MODEL_FILE} member {META}",
                        fix="the predictor type decides whether the score is a probability; it must be stated there")
    source = f"{MODEL_FILE} member {PARAMS}"
    saved = module_params(files)
    missing = sorted(set(ARRAYS) - set(saved))
    if missing:
        raise DataError(f"lacks {missing} (it holds {sorted(saved)})", source=source)
    arrays = {name: require_finite(saved[name], name, source) for name in ARRAYS}
    d, factors = arrays["v"].shape if arrays["v"].ndim == 2 else (0, 0)
    if not d or arrays["w1_weight"].size != d or arrays["w0_weight"].size != 1:
        raise DataError(f"v {arrays['v'].shape}, w1_weight {arrays['w1_weight'].shape} and w0_weight "
                        f"{arrays['w0_weight'].shape} are not (feature_dim, num_factors), (feature_dim, 1) and (1,)",
                        source=source)
    arrays["w1_weight"], arrays["w0_weight"] = arrays["w1_weight"].reshape(d, 1), arrays["w0_weight"].reshape(1)
    return arrays, {"predictor_type": predictor, "feature_dim": d, "num_factors": factors}
