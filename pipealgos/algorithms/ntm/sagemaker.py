"""NTM in SageMaker's format: ``model_algo-1`` is a zip of ``meta.json``, ``symbol.json`` and
``params`` (algorithms.md §6; a multi-host job leaves one per host, ``model_algo-1`` is read).

* ``params``: an NDArray dict with our arrays (:meth:`~.network.NTMNetwork.to_arrays`, already
  in MXNet's names and FullyConnected (out, in) layouts) under ``arg:<name>``, batch norm's
  moving statistics under ``aux:<name>``.
* ``meta.json``: ``training_parameters`` (the hyperparameters, each as a string, as SageMaker
  sends them), ``version`` and ``epoch_number``. Reading takes ``encoder_layers_activation``
  from it (no array holds it; SageMaker's default ``sigmoid`` when absent).
* ``symbol.json``: the real model's inference path: ``enc_i`` FullyConnected [+ BatchNorm] +
  activation per encoder layer, ``mean`` and ``logsigma`` FullyConnected, then
  ``projection`` FullyConnected of relu(mean) and log_softmax; its outputs are mean, logsigma
  and the log-probabilities. The training-only nodes of the real graph (the noise sample, the
  losses) are left out; ``version`` 1 and the ``epoch_number`` (the resolved ``epochs``, else 0)
  are our choice, their real values not being established.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipealgos.io import DataError
from pipealgos.io.mxnet_module import (MODEL_FILE, Node, json_member, model_file, module_params, module_zip_holds,
                                       params_file, read_zip, require_finite, shape_attr, symbol_json, write_zip)

META, SYMBOL, PARAMS = "meta.json", "symbol.json", "params"
META_VERSION = 1
AUX_SUFFIXES = ("_moving_mean", "_moving_var")


def to_sagemaker(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> dict[str, bytes]:
    aux = tuple(name for name in arrays if name.endswith(AUX_SUFFIXES))
    meta = {"training_parameters": {name: _as_string(value) for name, value in hyperparameters.items()},
            "version": META_VERSION, "epoch_number": int(hyperparameters.get("epochs") or 0)}
    members = {META: json.dumps(meta).encode(), SYMBOL: symbol(arrays, hyperparameters).encode(),
               PARAMS: params_file(arrays, aux)}
    return {MODEL_FILE: write_zip(members)}


def _as_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def symbol(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> str:
    """The inference graph of the encoder and decoder whose parameters ``arrays`` holds."""
    activation = hyperparameters.get("encoder_layers_activation", "sigmoid")
    nodes = [Node("null", "data")]

    def add(node: Node) -> int:
        nodes.append(node)
        return len(nodes) - 1

    def variable(name: str) -> int:
        return add(Node("null", name, attrs=shape_attr(arrays[name].shape)))

    def fully_connected(name: str, source: int) -> int:
        weight, bias = variable(f"{name}_weight"), variable(f"{name}_bias")
        return add(Node("FullyConnected", name, (source, weight, bias),
                        {"num_hidden": str(arrays[f"{name}_weight"].shape[0])}))

    layer, index = 0, 0
    while f"enc_{index}_weight" in arrays:
        layer = fully_connected(f"enc_{index}", layer)
        if f"enc_{index}_bn_gamma" in arrays:
            statistics = [variable(f"enc_{index}_bn_{part}")
                          for part in ("gamma", "beta", "moving_mean", "moving_var")]
            layer = add(Node("BatchNorm", f"enc_{index}_bn", (layer, *statistics), {"eps": "0.001", "momentum": "0.9"}))
        layer = add(Node("Activation", f"enc_{index}_act", (layer,), {"act_type": activation}))
        index += 1
    mean = fully_connected("mean", layer)
    logsigma = fully_connected("logsigma", layer)
    topics = add(Node("Activation", "z", (mean,), {"act_type": "relu"}))
    log_probabilities = add(Node("log_softmax", "log_softmax", (fully_connected("projection", topics),),
                                 {"axis": "-1"}))
    return symbol_json(nodes, heads=[mean, logsigma, log_probabilities])


def is_sagemaker(files: dict[str, bytes]) -> bool:
    return module_zip_holds(files, {META, PARAMS}, {"enc_0_weight"})


def from_sagemaker(files: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    members = read_zip(model_file(files), MODEL_FILE)
    meta = json_member(members, META, MODEL_FILE)
    parameters = meta.get("training_parameters") or {}
    activation = parameters.get("encoder_layers_activation", "sigmoid") if isinstance(parameters, dict) else "sigmoid"
    arrays = module_params(files)
    for name in ("enc_0_weight", "mean_weight", "projection_weight"):
        if name not in arrays:
            raise DataError(f"has no arg:{name} (it holds {sorted(arrays)})", source=f"{MODEL_FILE} member {PARAMS}",
                            fix="name the model's algorithm if it is not NTM")
    hyperparameters = {"feature_dim": arrays["enc_0_weight"].shape[1], "num_topics": arrays["mean_weight"].shape[0],
                       "encoder_layers_activation": activation}
    source = f"{MODEL_FILE} member {PARAMS}"
    return {name: require_finite(array, name, source) for name, array in arrays.items()}, hyperparameters
