"""The SageMaker format end to end: `train` writing it beside ours (PIPEALGOS_MODEL_FORMAT),
and `pipealgos export-model`, `import-model` and `inspect` through the CLI's main()."""

from __future__ import annotations

import dataclasses
import tarfile

import numpy as np
import pytest
from mlroot import make_ml_root, recordio_bytes, write_channel_files
from sagemaker_models import REAL_PCA_ARCHIVE, linear_learner_files, real_pca_model_file, write_folder

from pipealgos.cli import main
from pipealgos.io.ndarray import read_ndarrays
from pipealgos.platform.config import MLRoot
from pipealgos.platform.model_store import load_model, save_model
from pipealgos.platform.registry import get_algorithm, register, unregister
from pipealgos.platform.train import run_training
from pipealgos.serve.model import load_served_model

RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    monkeypatch.delenv("PIPEALGOS_ALGORITHM", raising=False)
    monkeypatch.delenv("PIPEALGOS_MODEL_FORMAT", raising=False)


def _pca_job(root, monkeypatch, model_format):
    make_ml_root(root, {"feature_dim": 5, "num_components": 2, "mini_batch_size": 40}, {"train": {}})
    rows = (RNG.normal(size=(120, 5)) @ RNG.normal(size=(5, 5)) + 2).astype(np.float32)
    write_channel_files(root, "train", [recordio_bytes(rows)])
    monkeypatch.setenv("PIPEALGOS_MODEL_FORMAT", model_format)
    return run_training(MLRoot(root), "pca"), rows


def _tar_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar}


def _predictions(model_path, rows, algorithm=None):
    return load_served_model(model_path, algorithm).predict(rows)[0]


def test_train_writes_sagemakers_model_algo_1_beside_ours(tmp_path, monkeypatch):
    status, rows = _pca_job(tmp_path / "ml", monkeypatch, "sagemaker")
    assert status == 0, (tmp_path / "ml" / "output" / "failure").read_text()
    model_dir = tmp_path / "ml" / "model"
    assert sorted(path.name for path in model_dir.iterdir()) == ["manifest.json", "model_algo-1", "model_algo-1.npz"]
    ours = load_model(model_dir).arrays
    theirs = read_ndarrays((model_dir / "model_algo-1").read_bytes())
    assert list(theirs) == ["s", "v", "mean"]
    for name in theirs:
        np.testing.assert_array_equal(theirs[name], ours[name])
    # SageMaker's file alone (what its image gets) answers as our model does.
    alone = write_folder(tmp_path / "sagemaker", {"model_algo-1": (model_dir / "model_algo-1").read_bytes()})
    np.testing.assert_array_equal(_predictions(alone, rows)["projection"], _predictions(model_dir, rows)["projection"])


def test_an_unknown_model_format_fails_the_job_before_training(tmp_path, monkeypatch):
    status, _ = _pca_job(tmp_path / "ml", monkeypatch, "onnx")
    assert status == 1
    failure = (tmp_path / "ml" / "output" / "failure").read_text()
    assert "PIPEALGOS_MODEL_FORMAT='onnx'" in failure and "'sagemaker'" in failure
    assert not any((tmp_path / "ml" / "model").iterdir())


def test_export_then_import_keeps_linear_learner_predictions(tmp_path, capsys):
    arrays = {"weight": RNG.normal(size=(4, 1)).astype(np.float32), "bias": np.array([0.2], np.float32),
              "threshold": np.array([0.3], np.float32)}
    hyperparameters = {"predictor_type": "binary_classifier", "loss": "logistic"}
    save_model(tmp_path / "ours", "linear-learner", hyperparameters, arrays, feature_dim=4)
    assert main(["export-model", "--format", "sagemaker", str(tmp_path / "ours"), str(tmp_path / "model.tar.gz")]) == 0
    assert list(_tar_members(tmp_path / "model.tar.gz")) == ["model_algo-1"]
    assert main(["import-model", str(tmp_path / "model.tar.gz"), str(tmp_path / "back")]) == 0
    assert "linear-learner" in capsys.readouterr().out
    rows = RNG.normal(size=(100, 4))
    before, after = _predictions(tmp_path / "ours", rows), _predictions(tmp_path / "back", rows)
    np.testing.assert_allclose(after["score"], before["score"], rtol=1e-6)
    np.testing.assert_array_equal(after["predicted_label"], before["predicted_label"])
    assert 0 < before["predicted_label"].mean() < 1
    assert load_model(tmp_path / "back").hyperparameters["predictor_type"] == "binary_classifier"


def test_import_of_the_real_pca_artifact_then_inspect_with_numpy(tmp_path, capsys):
    assert main(["import-model", str(REAL_PCA_ARCHIVE), str(tmp_path / "pca")]) == 0
    stored = load_model(tmp_path / "pca")
    assert stored.algorithm == "pca" and stored.feature_dim == 26
    assert main(["inspect", str(tmp_path / "pca"), "--numpy", str(tmp_path / "arrays")]) == 0
    out = capsys.readouterr().out
    saved = read_ndarrays(real_pca_model_file())
    # Largest singular value first, its share of the kept components' variance, the NaN shown.
    s = saved["s"].astype(np.float64)
    largest = int(np.nanargmax(s))
    ratio = s[largest] ** 2 / np.nansum(s ** 2)
    assert f"column {largest}: singular value {s[largest]:.6g}, explained variance ratio {ratio:.4f}" in out
    assert out.index(f"column {largest}:") < out.index("column 0: singular value nan")
    for name, array in saved.items():
        np.testing.assert_array_equal(np.load(tmp_path / "arrays" / f"{name}.npy"), array)


def test_inspect_a_sagemaker_linear_learner_folder_prints_its_coefficients(tmp_path, capsys):
    weight = np.array([[1.5], [-2.25]])
    folder = write_folder(tmp_path / "model", linear_learner_files(weight, np.array([0.5]), "regressor",
                                                                   "squared_loss"))
    vocabulary = tmp_path / "names.txt"
    vocabulary.write_text("age\nincome\n")
    assert main(["inspect", str(folder), "--vocabulary", str(vocabulary)]) == 0
    out = capsys.readouterr().out
    assert "format: sagemaker" in out and "algorithm: linear-learner" in out
    assert "age: [1.5]" in out and "income: [-2.25]" in out and "bias: [0.5]" in out


WITHOUT_FORMAT = "kmeans-without-sagemaker-format"


@pytest.fixture
def algorithm_without_format():
    """k-means registered again under another name, with no SageMaker format."""
    register(dataclasses.replace(get_algorithm("kmeans"), name=WITHOUT_FORMAT, aliases=(), sagemaker_format=None))
    yield
    unregister(WITHOUT_FORMAT)


def test_errors_are_one_line_naming_the_problem(tmp_path, capsys, algorithm_without_format):
    folder = write_folder(tmp_path / "model", {"model_algo-1": b"garbage"})
    assert main(["inspect", str(folder)]) == 1
    assert "pipealgos inspect: error:" in capsys.readouterr().err
    save_model(tmp_path / "ours", WITHOUT_FORMAT, {}, {"centroids": np.zeros((2, 3), np.float32)}, feature_dim=3)
    assert main(["export-model", str(tmp_path / "ours"), str(tmp_path / "out.tar.gz")]) == 1
    assert f"{WITHOUT_FORMAT} has no known SageMaker model format" in capsys.readouterr().err
    assert not (tmp_path / "out.tar.gz").exists()
    assert main(["import-model", str(REAL_PCA_ARCHIVE), str(tmp_path / "ours")]) == 1
    assert "already holds a model" in capsys.readouterr().err
