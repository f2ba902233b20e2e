"""SageMaker built-ins' model files built from the published layout (algorithms.md §0.5), with
zipfile and the NDArray writer only (none of pipealgos' SageMaker-format code), and the
arithmetic SageMaker's image applies to them, in numpy."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from pipealgos.io.ndarray import write_ndarrays

REAL_PCA_ARCHIVE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "sagemaker-artifacts"
                    / "pca-ml-finance-btc" / "model.tar.gz")


def real_pca_model_file() -> bytes:
    with tarfile.open(REAL_PCA_ARCHIVE) as tar:
        return tar.extractfile("model_algo-1").read()


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    return folder


def pca_files(v: np.ndarray, mean: np.ndarray | None) -> dict[str, bytes]:
    arrays = {"s": np.arange(1, v.shape[1] + 1, dtype=np.float32), "v": v.astype(np.float32)}
    if mean is not None:
        arrays["mean"] = mean.astype(np.float32).reshape(1, -1)
    return {"model_algo-1": write_ndarrays(arrays)}


def kmeans_files(centroids: np.ndarray) -> dict[str, bytes]:
    # The real tarball also holds a state file beside the model.
    return {"model_algo-1": write_ndarrays([centroids.astype(np.float32)]),
            "state_0b9d3b8e-9d6a-4d42-8f1c-2f6b1c0e7a11": b"\x00state"}


def linear_learner_files(weight: np.ndarray, bias: np.ndarray, predictor: str, loss: str,
                         threshold: float = 0.5) -> dict[str, bytes]:
    additional = {"threshold": threshold, "loss_type": loss, "predictor_type": predictor,
                  "metrics_params": {"beta": 1.0}}
    symbol = {"nodes": [{"op": "null", "name": "data", "inputs": []}], "arg_nodes": [0], "node_row_ptr": [0, 1],
              "heads": [[0, 0, 0]]}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"additional-params.json": "json", "mx-mod": "mxnet_module",
                                                      "version": 1}))
        archive.writestr("additional-params.json", json.dumps(additional))
        archive.writestr("mx-mod-symbol.json", json.dumps(symbol))
        archive.writestr("mx-mod-0000.params", write_ndarrays({"arg:fc0_weight": weight.astype(np.float32),
                                                               "arg:fc0_bias": bias.astype(np.float32).reshape(1, -1)}))
    return {"model_algo-1": buffer.getvalue()}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def linear_learner_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, predictor: str, loss: str,
                             threshold: float) -> dict[str, np.ndarray]:
    """score and predicted_label as SageMaker's linear learner answers: the threshold is on the score."""
    margin = x.astype(np.float64) @ weight.astype(np.float64) + bias.astype(np.float64).reshape(1, -1)
    if predictor == "regressor":
        return {"score": margin[:, 0]}
    if predictor == "multiclass_classifier":
        exp = np.exp(margin - margin.max(axis=1, keepdims=True))
        return {"score": exp / exp.sum(axis=1, keepdims=True), "predicted_label": margin.argmax(axis=1)}
    score = sigmoid(margin[:, 0]) if loss == "logistic" else margin[:, 0]
    return {"score": score, "predicted_label": (score > threshold).astype(np.float64)}


def ntm_files(arrays: dict[str, np.ndarray], activation: str) -> dict[str, bytes]:
    """An NTM zip: params as an NDArray dict of arg: names, meta.json with string parameters."""
    meta = {"training_parameters": {"encoder_layers_activation": activation, "num_topics": "3"}, "version": "1",
            "epoch_number": 7}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("symbol.json", json.dumps({"nodes": [], "arg_nodes": [], "heads": []}))
        archive.writestr("params", write_ndarrays({f"arg:{name}": array.astype(np.float32)
                                                   for name, array in arrays.items()}))
    return {"model_algo-1": buffer.getvalue()}


def ntm_arrays(vocabulary: int, topics: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """encoder_layers=auto: FC(3k), FC(2k), mean and logsigma FC(k), projection FC(vocabulary)."""
    widths = [vocabulary, 3 * topics, 2 * topics]
    arrays = {}
    for index in range(2):
        arrays[f"enc_{index}_weight"] = rng.normal(size=(widths[index + 1], widths[index])) * 0.5
        arrays[f"enc_{index}_bias"] = rng.normal(size=widths[index + 1]) * 0.1
    for name in ("mean", "logsigma"):
        arrays[f"{name}_weight"], arrays[f"{name}_bias"] = rng.normal(size=(topics, widths[2])), rng.normal(size=topics)
    arrays["projection_weight"] = rng.normal(size=(vocabulary, topics))
    arrays["projection_bias"] = rng.normal(size=vocabulary)
    return arrays


def ntm_topic_weights(x: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """softmax(relu(mean)) of the sigmoid encoder: the inference statistic pipealgos answers with."""
    h = x
    for index in range(2):
        h = sigmoid(h @ arrays[f"enc_{index}_weight"].T + arrays[f"enc_{index}_bias"])
    mu = np.maximum(h @ arrays["mean_weight"].T + arrays["mean_bias"], 0)
    exp = np.exp(mu - mu.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def factorization_machine_files(w0: float, w1: np.ndarray, v: np.ndarray, predictor: str) -> dict[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("symbol.json", json.dumps({"nodes": [], "arg_nodes": [], "heads": []}))
        archive.writestr("params", write_ndarrays({"arg:v": v.astype(np.float32),
                                                   "arg:w1_weight": w1.astype(np.float32).reshape(-1, 1),
                                                   "arg:w0_weight": np.array([w0], np.float32)}))
        archive.writestr("meta.json", json.dumps({"training_parameters": {
            "feature_dim": str(v.shape[0]), "num_factors": str(v.shape[1]), "predictor_type": predictor}}))
    return {"model_algo-1": buffer.getvalue()}


def factorization_machine_output(x: np.ndarray, w0: float, w1: np.ndarray, v: np.ndarray) -> np.ndarray:
    """ŷ = w0 + x·w1 + Σ_{i<j} <v_i, v_j> x_i x_j, by the pairwise sum itself."""
    pairs = (x @ v) @ (x @ v).T
    pairwise = 0.5 * (np.diag(pairs) - (x * x) @ (v * v).sum(axis=1))
    return w0 + x @ w1.reshape(-1) + pairwise
