"""`serve` on models trained by SageMaker's own containers: the real PCA artifact, and
synthetic k-means and linear-learner files built from the published layout, each served by a
real server and answering with the arithmetic SageMaker's image applies to their arrays."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sagemaker_models import (REAL_PCA_ARCHIVE, kmeans_files, linear_learner_files, linear_learner_reference,
                              real_pca_model_file, write_folder)
from serve_helpers import start_server

from pipealgos.io.ndarray import read_ndarrays

RNG = np.random.default_rng(11)


def _csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(value)) for value in row) for row in rows).encode()


def _invoke(server, rows: np.ndarray) -> dict:
    status, _, body = server.request("POST", "/invocations", _csv(rows),
                                     {"Content-Type": "text/csv", "Accept": "application/json"})
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def serve_model(tmp_path, monkeypatch):
    """Serve the folder ``model`` of a fresh ML root; stops the server after the test."""
    monkeypatch.delenv("PIPEALGOS_ALGORITHM", raising=False)
    servers = []

    def start(fill_model_folder, env=None, extra_args=()):
        fill_model_folder(tmp_path / "ml" / "model")
        servers.append(start_server(tmp_path / "ml", tmp_path / "serve.log", env=env, workers=1, extra_args=extra_args))
        return servers[-1]

    yield start
    for server in servers:
        assert server.stop() == 0, server.logs()


def test_real_sagemaker_pca_archive_projects_as_x_minus_mean_times_v(serve_model):
    def fill(folder):
        folder.mkdir(parents=True)
        shutil.copy(REAL_PCA_ARCHIVE, folder / "model.tar.gz")

    server = serve_model(fill)
    saved = read_ndarrays(real_pca_model_file())
    rows = RNG.normal(size=(16, 26)).astype(np.float32)
    projections = np.array([item["projection"] for item in _invoke(server, rows)["projections"]])
    np.testing.assert_allclose(projections, (rows - saved["mean"]) @ saved["v"], rtol=1e-4, atol=1e-4)
    # A record of the wrong width is the client's error, and the server keeps serving.
    status, _, body = server.request("POST", "/invocations", b"1,2,3", {"Content-Type": "text/csv"})
    assert status == 400 and b"26" in body
    assert server.request("GET", "/ping")[0] == 200


@pytest.mark.parametrize("named_by", ["environment", "--algorithm"])
def test_kmeans_named_by_pipealgos_algorithm(serve_model, named_by):
    centroids = RNG.normal(size=(3, 4)) * 4
    how = {"env": {"PIPEALGOS_ALGORITHM": "kmeans"}} if named_by == "environment" else {"extra_args": ("--algorithm", "kmeans")}
    server = serve_model(lambda folder: write_folder(folder, kmeans_files(centroids)), **how)
    rows = RNG.normal(size=(12, 4)) * 4
    answers = _invoke(server, rows)["predictions"]
    distances = np.linalg.norm(rows[:, None] - centroids.astype(np.float32)[None], axis=2)
    assert [item["closest_cluster"] for item in answers] == distances.argmin(axis=1).tolist()
    np.testing.assert_allclose([item["distance_to_cluster"] for item in answers], distances.min(axis=1), rtol=1e-5)


def test_linear_learner_zip_found_from_its_layout(serve_model):
    weight, bias = RNG.normal(size=(5, 1)), RNG.normal(size=1)
    server = serve_model(lambda folder: write_folder(
        folder, linear_learner_files(weight, bias, "binary_classifier", "logistic", threshold=0.4)))
    rows = RNG.normal(size=(40, 5))
    answers = _invoke(server, rows)["predictions"]
    expected = linear_learner_reference(rows, weight, bias, "binary_classifier", "logistic", 0.4)
    np.testing.assert_allclose([item["score"] for item in answers], expected["score"], rtol=1e-4, atol=1e-6)
    assert [item["predicted_label"] for item in answers] == expected["predicted_label"].tolist()
