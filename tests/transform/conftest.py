"""Fixtures for the transform tests: a k-means model (folder and model.tar.gz), one model server
shared by the tests that do not test the server's start, and the runner tests' real SeaweedFS S3 server."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

from pipealgos.platform.model_store import save_model

sys.path.insert(0, str(Path(__file__).parents[1] / "runner"))

from runner.conftest import s3env, seaweed  # noqa: E402,F401  (the runner tests' SeaweedFS fixtures)
from transformkit import CENTROIDS, FEATURES  # noqa: E402



@pytest.fixture(scope="session")
def kmeans_model(tmp_path_factory) -> Path:
    """A k-means model folder (three centroids in 4 dimensions)."""
    folder = tmp_path_factory.mktemp("kmeans") / "model"
    save_model(folder, "kmeans", {"k": 3, "feature_dim": FEATURES}, {"centroids": CENTROIDS}, feature_dim=FEATURES)
    return folder


@pytest.fixture(scope="session")
def kmeans_archive(kmeans_model) -> Path:
    """The same model as the model.tar.gz a training job writes."""
    archive = kmeans_model.parent / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(kmeans_model.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


@pytest.fixture(scope="module")
def shared_server(kmeans_model):
    """One started model server for a module's jobs (starting one costs seconds)."""
    from pipealgos.platform.transform.server import ModelServer

    server = ModelServer(kmeans_model, {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
                         lambda host, line: None)
    server.wait_ready()
    yield server
    server.stop()

