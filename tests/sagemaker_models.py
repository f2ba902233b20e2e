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
