"""Declared capabilities enforced by `train` and `serve` themselves, shown with the test-only
algorithm (RecordIO only, CPU only, one host, a raw auxiliary channel) and the built-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mlroot import make_ml_root, recordio_bytes, write_channel_files
from toy_algorithm import SPEC as TOY
from toy_algorithm import register_toy

from pipealgos.algorithms.tensors import pick_device
from pipealgos.platform.config import MLRoot
from pipealgos.platform.model_store import load_model
from pipealgos.platform.registry import unregister
from pipealgos.platform.train import run_training
from pipealgos.serve.app import create_app


@pytest.fixture(autouse=True)
def toy():
    register_toy()
    yield
    unregister(TOY.name)


def _rows(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float32)
    x = (rng.normal(size=(n, 6)) + 3 * y[:, None]).astype(np.float32)
    return x, y


def _toy_job(root, channels=None, vocab_lines=6, hosts=("algo-1",), hp=None):
    channels = channels or {"train": {"TrainingInputMode": "File"}, "auxiliary": {"TrainingInputMode": "File",
                                                                                 "ContentType": "text/plain"}}
    make_ml_root(root, hp or {"feature_dim": "6"}, channels, hosts=hosts)
    x, y = _rows()
    write_channel_files(root, "train", [recordio_bytes(x, y)])
    vocab = root / "input" / "data" / "auxiliary"
    vocab.mkdir(parents=True, exist_ok=True)
    (vocab / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(vocab_lines)))
    return run_training(MLRoot(root), TOY.name)


def _failure(root) -> str:
    return (root / "output" / "failure").read_text()


def test_a_new_algorithm_trains_with_its_raw_channel_and_stores_resolved_autos(tmp_path):
    assert _toy_job(tmp_path) == 0, _failure(tmp_path)
    stored = load_model(tmp_path / "model")
    assert stored.hyperparameters["shrinkage"] == "auto"
    assert stored.resolved_hyperparameters["shrinkage"] == 0.0
    assert stored.feature_dim == 6


def test_the_raw_channel_reaches_the_algorithm_as_files(tmp_path):
    assert _toy_job(tmp_path, vocab_lines=5) == 1
    assert "vocab.txt has 5 lines, feature_dim is 6" in _failure(tmp_path)


@pytest.mark.parametrize("channels, message", [
    ({"train": {"ContentType": "text/csv"}},
     "toy-centroid does not read ContentType 'text/csv' on channel 'train': use one of application/x-recordio-protobuf"),
    ({"train": {}, "auxiliary": {"TrainingInputMode": "Pipe"}},
     "channel 'auxiliary' of toy-centroid holds text/plain files, which are read as files: set its InputMode to File"),
    ({"train": {}, "test": {"S3DistributionType": "ShardedByS3Key"}},
     "toy-centroid takes channel 'test' with S3DataDistributionType FullyReplicated only, not ShardedByS3Key"),
    ({"train": {}, "validation": {}}, "channel(s) ['validation'] are not used by toy-centroid"),
    ({"test": {}}, "toy-centroid needs the channel(s) ['train']"),
])
def test_channel_rules_are_enforced_naming_algorithm_channel_and_accepted_values(tmp_path, channels, message):
    assert _toy_job(tmp_path, channels=channels) == 1
    assert message in _failure(tmp_path)
    assert not (tmp_path / "model" / "manifest.json").exists()


def test_more_hosts_than_declared_is_refused(tmp_path):
    assert _toy_job(tmp_path, hosts=("algo-1", "algo-2")) == 1
    assert "toy-centroid trains on at most 1 host(s); the job has 2: set InstanceCount to 1" in _failure(tmp_path)


def test_cpu_only_algorithms_train_on_the_cpu_even_beside_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(TOY.devices).type == "cpu"
    assert pick_device(("cpu", "cuda")).type == "cuda"


def test_undeclared_request_type_is_415_naming_the_accepted_ones(tmp_path):
    assert _toy_job(tmp_path) == 0, _failure(tmp_path)
    client = create_app(tmp_path / "model").test_client()
    response = client.post("/invocations", data=b"1,2,3,4,5,6\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert "toy-centroid cannot read Content-Type 'text/csv'" in response.get_data(as_text=True)
    ok = client.post("/invocations", data=json.dumps({"instances": [{"features": [0.0] * 6}]}),
                     headers={"Content-Type": "application/json"})
    assert ok.status_code == 200, ok.get_data(as_text=True)


def test_linear_learner_with_auto_feature_dim_checks_request_width(tmp_path):
    """The model owns its width: a feature_dim=auto model answers 400 naming the record and
    both widths (it answered 500 with a numpy traceback when the width came from the stored
    hyperparameters)."""
    x, y = _rows()
    make_ml_root(tmp_path, {"predictor_type": "binary_classifier", "epochs": "1", "num_models": "2"},
                 {"train": {"TrainingInputMode": "File"}})
    write_channel_files(tmp_path, "train", [recordio_bytes(x, y)])
    assert run_training(MLRoot(tmp_path), "linear-learner") == 0, _failure(tmp_path)
    stored = load_model(tmp_path / "model")
    assert stored.hyperparameters["feature_dim"] == "auto" and stored.resolved_hyperparameters["feature_dim"] == 6
    client = create_app(tmp_path / "model").test_client()
    body = {"instances": [{"features": [0.0] * 6}, {"features": [0.0] * 4}]}
    response = client.post("/invocations", data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "record 1 'features' has 4 features, but the model takes 6" in response.get_data(as_text=True)
    csv = client.post("/invocations", data=b"1,2,3\n", headers={"Content-Type": "text/csv"})
    assert csv.status_code == 400 and "expected feature_dim 6" in csv.get_data(as_text=True)
