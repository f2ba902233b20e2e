from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlroot import make_ml_root, recordio_bytes, write_channel_files
from serve_helpers import start_server, training_rows

from pipealgos.platform.config import MLRoot
from pipealgos.platform.model_store import load_model
from pipealgos.platform.registry import get_algorithm
from pipealgos.platform.train import run_training

FEATURE_DIM = 6
NUM_COMPONENTS = 3


@dataclass
class TrainedPCA:
    root: Path
    rows: np.ndarray

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def predict(self, features) -> np.ndarray:
        """The trained model's own projections (what the server must return)."""
        stored = load_model(self.model_dir)
        model = get_algorithm(stored.algorithm).model_type.from_arrays(stored.arrays, stored.hyperparameters)
        return model.predict(features)["projection"]


@pytest.fixture(scope="session")
def trained_pca(tmp_path_factory) -> TrainedPCA:
    """A PCA model trained by the real training entry point on a File-mode channel."""
    root = tmp_path_factory.mktemp("pca-ml-root")
    make_ml_root(root, {"feature_dim": FEATURE_DIM, "num_components": NUM_COMPONENTS, "mini_batch_size": 50},
                 {"train": {"TrainingInputMode": "File"}})
    rows = training_rows(d=FEATURE_DIM)
    write_channel_files(root, "train", [recordio_bytes(rows)])
    assert run_training(MLRoot(root), "pca") == 0, (root / "output" / "failure").read_text()
    return TrainedPCA(root, rows)


@pytest.fixture(scope="module")
def server(trained_pca, tmp_path_factory):
    """One real `serve` (gunicorn, 2 workers) for a test module."""
    process = start_server(trained_pca.root, tmp_path_factory.mktemp("serve-log") / "serve.log")
    yield process
    assert process.stop() == 0, process.logs()
