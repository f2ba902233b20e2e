"""Factorization machines: the O(k·nnz) computation against the FM equation and autograd, real
`train` jobs (File and Pipe mode, the real reader) to a saved model served over the real WSGI
app in every request type FM takes, the metric lines, and bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import linear_learner_jobs
from mlroot import FifoFeeder, make_ml_root, write_channel_files

from pipealgos.algorithms.factorization_machines import FactorizationMachineModel
from pipealgos.algorithms.factorization_machines.compute import SparseRows, forward, row_gradient
from pipealgos.algorithms.factorization_machines.optimizer import StepSettings, TouchedRowsAdaGrad
from pipealgos.algorithms.factorization_machines.training import loss_and_gradient
from pipealgos.io import record_pb2, write_sparse
from pipealgos.io.recordio import encode_frame, iter_records
from pipealgos.platform.config import MLRoot
from pipealgos.platform.hyperparameters import HyperparameterError
from pipealgos.platform.model_store import load_model
from pipealgos.platform.schemas.factorization_machines import SCHEMA
from pipealgos.platform.train import run_training
from pipealgos.serve.app import create_app

D, K = 40, 4
HP = {"feature_dim": D, "num_factors": K, "mini_batch_size": 50, "epochs": 8, "bias_lr": 0.1, "linear_lr": 0.1,
      "factors_lr": 0.05}
RECORDIO = "application/x-recordio-protobuf"


# --- the computation ------------------------------------------------------------------------


def _naive_margin(bias: float, w: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ŷ = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j, pair by pair."""
    out = bias + x @ w
    for i in range(x.shape[1]):
        for j in range(i + 1, x.shape[1]):
            out = out + (v[i] @ v[j]) * x[:, i] * x[:, j]
    return out


def _random_sparse(rows: int, seed: int = 0) -> sp.csr_matrix:
    return sp.random(rows, D, density=0.15, format="csr", random_state=seed, dtype=np.float32)


def test_forward_is_the_fm_equation_on_the_non_zeros_only():
    rng = np.random.default_rng(1)
    x = _random_sparse(30)
    table = torch.from_numpy(rng.normal(size=(D, 1 + K)).astype(np.float32))
    bias = torch.tensor([0.3])
    margin = forward(bias, table, SparseRows.from_features(x, torch.device("cpu"))).margin
    expected = _naive_margin(0.3, table[:, 0].double().numpy(), table[:, 1:].double().numpy(), x.toarray())
    np.testing.assert_allclose(margin.numpy(), expected, rtol=1e-4, atol=1e-4)
    model = FactorizationMachineModel("regressor", bias.numpy(), table[:, 0].numpy(), table[:, 1:].numpy())
    np.testing.assert_allclose(model.predict(x)["score"], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict(x.toarray())["score"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("predictor_type", ["regressor", "binary_classifier"])
def test_touched_gradient_matches_autograd(predictor_type):
    rng = np.random.default_rng(2)
    x = _random_sparse(25, seed=3)
    labels = torch.from_numpy(rng.integers(0, 2, 25).astype(np.float32))
    table = torch.from_numpy(rng.normal(scale=0.3, size=(D, 1 + K)).astype(np.float32)).requires_grad_()
    bias = torch.zeros(1, requires_grad=True)
    batch = SparseRows.from_features(x, torch.device("cpu"))
    fwd = forward(bias, table, batch)
    loss, margin_grad = loss_and_gradient(predictor_type, fwd.margin, labels)
    scale = 0.5 if predictor_type == "regressor" else 1.0  # the regressor's loss is ½(ŷ − y)²
    (scale * loss.sum()).backward()
    touched, local = batch.localised()
    assert torch.equal(touched, torch.from_numpy(np.unique(x.indices)).long())
    local_fwd = forward(bias.detach(), table.detach()[touched], local)
    np.testing.assert_allclose(local_fwd.margin.numpy(), fwd.margin.detach().numpy(), rtol=1e-6)
    grad = row_gradient(local, local_fwd, margin_grad.detach(), touched.numel())
    np.testing.assert_allclose(grad.numpy(), table.grad[touched].numpy(), rtol=1e-4, atol=1e-5)
    untouched = np.setdiff1d(np.arange(D), touched.numpy())
    assert not table.grad[untouched].any()
    np.testing.assert_allclose(margin_grad.sum().item(), bias.grad.item(), rtol=1e-5)


def test_adagrad_steps_the_gathered_rows_with_per_term_settings():
    k = 2
    rows = torch.cat([torch.ones(2, 1 + k), torch.zeros(2, 1 + k)], dim=1)  # parameters, then accumulators
    bias = torch.zeros(1)
    settings = StepSettings(bias_lr=0.5, bias_wd=0.0, linear_lr=0.1, linear_wd=0.0, factors_lr=0.01, factors_wd=0.0,
                            clip_gradient=None, eps=1e-7)
    TouchedRowsAdaGrad(bias, 1 + k, settings).step(bias, torch.tensor([2.0]), rows, torch.full((2, 1 + k), 3.0), 1.0)
    # AdaGrad's first step is lr * sign(g) for every parameter; the accumulators hold g².
    np.testing.assert_allclose(bias.numpy(), [-0.5], rtol=1e-5)
    np.testing.assert_allclose(rows[:, : 1 + k].numpy(), [[0.9, 0.99, 0.99]] * 2, rtol=1e-5)
    np.testing.assert_allclose(rows[:, 1 + k :].numpy(), 9.0)
    clipped = dataclasses.replace(settings, clip_gradient=0.5, linear_wd=1.0)
    rows = torch.cat([torch.ones(1, 1 + k), torch.zeros(1, 1 + k)], dim=1)
    TouchedRowsAdaGrad(bias, 1 + k, clipped).step(bias, torch.tensor([2.0]), rows, torch.full((1, 1 + k), 0.1), 1.0)
    # linear: 0.1 + wd * w = 1.1, clipped to 0.5; factors: 0.1 unclipped.
    np.testing.assert_allclose(rows[0, 1 + k :].numpy(), [0.25, 0.01, 0.01], rtol=1e-5)


# --- jobs -----------------------------------------------------------------------------------

QUALITY = re.compile(r"#quality_metric: host=\S+, (?:epoch=\S+, )?(\S+) (\S+) <(?:loss|score)>=(\S+)")
TEST_SCORE = re.compile(r"#test_score \((\S+)\) : \('(\S+)', (\S+)\)")


def planted(rows: int, predictor_type: str, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse rows whose label comes from one known FM (pairwise terms included)."""
    x = sp.random(rows, D, density=0.1, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1.0
    fm = np.random.default_rng(99)  # one FM for every seed: ``seed`` draws other rows of it
    w, v = fm.normal(size=D), fm.normal(scale=0.7, size=(D, K))
    margin = FactorizationMachineModel("regressor", np.array([0.2]), w, v).margins(x)
    if predictor_type == "regressor":
        return x, margin.astype(np.float32)
    return x, (margin > np.median(margin)).astype(np.float32)


def sparse_bytes(x, y=None) -> bytes:
    out = io.BytesIO()
    write_sparse(out, x, y)
    return out.getvalue()


class Job(linear_learner_jobs.Job):
    """A finished job (status, log, failure file) whose model is an FM."""

    def model(self) -> FactorizationMachineModel:
        stored = load_model(self.root / "model")
        return FactorizationMachineModel.from_arrays(stored.arrays, stored.hyperparameters)


def run_job(root: Path, hyperparameters: dict, channels: dict[str, bytes], mode: str = "File",
            content_type: str | None = None) -> Job:
    entry = {"TrainingInputMode": mode} | ({"ContentType": content_type} if content_type else {})
    make_ml_root(root, hyperparameters, {name: dict(entry) for name in channels})
    feeders = []
    for name, data in channels.items():
        if mode == "File":
            write_channel_files(root, name, [data])
        else:
            passes = 1 if name == "test" else int(hyperparameters.get("epochs", 1))
            feeders.append(FifoFeeder(root, name, [data] * passes))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_training(MLRoot(root), "factorization-machines")
    for feeder in feeders:
        feeder.join(timeout=0.2)
    return Job(root, status, out.getvalue())


@pytest.fixture(scope="module")
def binary_job(tmp_path_factory) -> Job:
    x, y = planted(3000, "binary_classifier")
    tx, ty = planted(600, "binary_classifier", seed=1)
    root = tmp_path_factory.mktemp("fm-binary")
    job = run_job(root, {**HP, "predictor_type": "binary_classifier"},
                  {"train": sparse_bytes(x, y), "test": sparse_bytes(tx, ty)})
    assert job.status == 0, job.failure
    return job


def test_binary_job_reports_the_spec_metrics_and_learns(binary_job):
    finals = {(channel, name): float(value) for channel, name, value in QUALITY.findall(binary_job.log)}
    assert set(k for k in finals if k[0] == "test") == {
        ("test", "binary_classification_accuracy"), ("test", "binary_classification_cross_entropy"),
        ("test", "binary_f_beta")}
    assert finals["test", "binary_classification_accuracy"] >= 0.8
    scores = {name: float(value) for host, name, value in TEST_SCORE.findall(binary_job.log)}
    assert scores["binary_classification_accuracy"] == pytest.approx(finals["test", "binary_classification_accuracy"],
                                                                     rel=1e-5)
    assert "train binary_classification_cross_entropy" in binary_job.log
    tx, ty = planted(600, "binary_classifier", seed=1)
    predicted = binary_job.model().predict(tx)["predicted_label"]
    assert np.mean(predicted == ty) == pytest.approx(finals["test", "binary_classification_accuracy"], abs=1e-6)
    arrays = load_model(binary_job.root / "model").arrays
    assert {k: v.shape for k, v in arrays.items()} == {"w0_weight": (1,), "w1_weight": (D, 1), "v": (D, K)}


def test_pipe_mode_regressor_matches_file_mode(tmp_path):
    x, y = planted(2000, "regressor")
    tx, ty = planted(400, "regressor", seed=1)
    hp = {**HP, "predictor_type": "regressor", "epochs": 3}
    channels = {"train": sparse_bytes(x, y), "test": sparse_bytes(tx, ty)}
    file_job = run_job(tmp_path / "file", hp, channels)
    pipe_job = run_job(tmp_path / "pipe", hp, channels, mode="Pipe")
    assert file_job.status == 0 and pipe_job.status == 0, file_job.failure + pipe_job.failure
    a, b = load_model(tmp_path / "file" / "model").arrays, load_model(tmp_path / "pipe" / "model").arrays
    assert all(np.array_equal(a[k], b[k]) for k in a)
    (host, name, value), = TEST_SCORE.findall(file_job.log)
    rmse = float(np.sqrt(np.mean((file_job.model().predict(tx)["score"] - ty) ** 2)))
    assert (host, name) == ("algo-1", "rmse") and float(value) == pytest.approx(rmse, rel=1e-4)
    assert rmse < 0.8 * float(np.std(ty))  # it learned the planted FM, not just the mean
    assert "predicted_label" not in file_job.model().predict(tx)


# --- serving --------------------------------------------------------------------------------


def _post(client, body, content_type, accept="application/json"):
    return client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": accept})


def test_server_answers_sparse_json_jsonlines_and_recordio(binary_job):
    client = create_app(binary_job.root / "model").test_client()
    model = binary_job.model()
    x = sp.random(5, D, density=0.2, format="csr", random_state=7, dtype=np.float32)
    expected = model.predict(x)
    instances = [{"data": {"features": {"keys": x[i].indices.tolist(), "shape": [D], "values": x[i].data.tolist()}}}
                 for i in range(5)]
    response = _post(client, json.dumps({"instances": instances}), "application/json")
    assert response.status_code == 200, response.data
    predictions = response.get_json()["predictions"]
    np.testing.assert_allclose([p["score"] for p in predictions], expected["score"], rtol=1e-5)
    assert [p["predicted_label"] for p in predictions] == expected["predicted_label"].tolist()
    assert all(p["predicted_label"] == float(p["score"] >= 0.5) for p in predictions)

    lines = "\n".join(json.dumps(instance) for instance in instances)
    response = _post(client, lines, "application/jsonlines", "application/jsonlines")
    assert response.status_code == 200, response.data
    answered = [json.loads(line) for line in response.data.decode().splitlines()]
    np.testing.assert_allclose([a["score"] for a in answered], expected["score"], rtol=1e-5)

    response = _post(client, sparse_bytes(x), RECORDIO, RECORDIO)
    assert response.status_code == 200, response.data
    records = [record_pb2.Record.FromString(r) for r in iter_records(io.BytesIO(response.data))]
    np.testing.assert_allclose([r.label["score"].float32_tensor.values[0] for r in records], expected["score"],
                               rtol=1e-6)
    assert [r.label["predicted_label"].float32_tensor.values[0] for r in records] == \
        expected["predicted_label"].tolist()


def test_server_refuses_csv_and_keys_beyond_feature_dim_and_stays_up(binary_job):
    client = create_app(binary_job.root / "model").test_client()
    response = _post(client, ",".join(["0"] * D), "text/csv")
    assert response.status_code == 415
    assert "application/x-recordio-protobuf" in response.data.decode()
    beyond = {"instances": [{"data": {"features": {"keys": [D], "shape": [D], "values": [1.0]}}}]}
    response = _post(client, json.dumps(beyond), "application/json")
    assert response.status_code == 400 and str(D) in response.data.decode()
    wider = {"instances": [{"data": {"features": {"keys": [3], "shape": [D + 1], "values": [1.0]}}}]}
    response = _post(client, json.dumps(wider), "application/json")
    assert response.status_code == 400 and str(D) in response.data.decode()
    assert client.get("/ping").status_code == 200


# --- bad input ------------------------------------------------------------------------------


def _failed(job: Job) -> str:
    assert job.status == 1, job.log
    assert not (job.root / "model" / "manifest.json").exists()
    return job.failure


def test_csv_training_data_is_refused_naming_the_content_type(tmp_path):
    job = run_job(tmp_path, {**HP, "predictor_type": "regressor"}, {"train": b"1,0,1\n"}, content_type="text/csv")
    failure = _failed(job)
    assert "text/csv" in failure and "application/x-recordio-protobuf" in failure and "train" in failure


def test_binary_labels_outside_zero_one_name_the_record(tmp_path):
    x, _ = planted(300, "regressor")
    y = np.zeros(300, dtype=np.float32)
    y[137] = 2.0
    failure = _failed(run_job(tmp_path, {**HP, "predictor_type": "binary_classifier"}, {"train": sparse_bytes(x, y)}))
    assert "record 137" in failure and "label 2.0" in failure and "0 or 1" in failure


def test_unlabelled_records_are_refused(tmp_path):
    x, _ = planted(100, "regressor")
    failure = _failed(run_job(tmp_path, {**HP, "predictor_type": "regressor"}, {"train": sparse_bytes(x)}))
    assert "no label" in failure and "train" in failure


def _with_key_beyond_shape(data: bytes, record: int, key: int) -> bytes:
    """``data``'s records with one key of record ``record`` moved to ``key`` (past its shape)."""
    payloads = list(iter_records(io.BytesIO(data)))
    message = record_pb2.Record.FromString(payloads[record])
    message.features["values"].float32_tensor.keys[0] = key
    payloads[record] = message.SerializeToString()
    return b"".join(encode_frame(p) for p in payloads)


def test_keys_beyond_feature_dim_are_refused_naming_the_record(tmp_path):
    x, y = planted(100, "regressor")
    hp = {**HP, "predictor_type": "regressor"}
    failure = _failed(run_job(tmp_path / "key", hp, {"train": _with_key_beyond_shape(sparse_bytes(x, y), 42, D)}))
    assert "record 42" in failure and str(D) in failure
    wider = sp.hstack([x, sp.csr_matrix((100, 10), dtype=np.float32)], format="csr")
    failure = _failed(run_job(tmp_path / "shape", hp, {"train": sparse_bytes(wider, y)}))
    assert "record 0" in failure and "50 features, expected feature_dim 40" in failure


def test_float64_tensors_are_read_as_float32_and_beyond_float32_refused(tmp_path):
    """The documented conversion: Float64Tensor values train as their float32 cast (the same model as
    Float32Tensor data); a value that is infinite in float32 is refused with its record."""
    x, y = planted(400, "regressor")
    hp = {**HP, "predictor_type": "regressor", "epochs": 1}
    as32 = run_job(tmp_path / "f32", hp, {"train": sparse_bytes(x, y)})
    as64 = run_job(tmp_path / "f64", hp, {"train": sparse_bytes(x.astype(np.float64), y.astype(np.float64))})
    assert as32.status == 0 and as64.status == 0, as32.failure + as64.failure
    a, b = load_model(tmp_path / "f32" / "model").arrays, load_model(tmp_path / "f64" / "model").arrays
    assert all(np.array_equal(a[k], b[k]) for k in a)
    huge = x.astype(np.float64)
    huge.data[huge.indptr[7]] = 1e40
    failure = _failed(run_job(tmp_path / "huge", hp, {"train": sparse_bytes(huge, y)}))
    assert "record 7" in failure


@pytest.mark.parametrize("missing", ["predictor_type", "num_factors", "feature_dim"])
def test_missing_required_hyperparameters_are_named(missing):
    raw = {"feature_dim": "10", "num_factors": "4", "predictor_type": "regressor"}
    del raw[missing]
    with pytest.raises(HyperparameterError, match=f"Missing required hyperparameter '{missing}'"):
        SCHEMA.parse(raw)


def test_hyperparameter_ranges_and_init_methods():
    base = {"feature_dim": "10", "num_factors": "4", "predictor_type": "regressor"}
    params = SCHEMA.build(base)
    assert (params.epochs, params.mini_batch_size, params.bias_lr, params.linear_lr, params.factors_lr) == \
        (1, 1000, 0.1, 0.001, 0.0001)
    assert (params.bias_wd, params.linear_wd, params.factors_wd) == (0.01, 0.001, 0.00001)
    assert (params.bias_init_sigma, params.linear_init_sigma, params.factors_init_sigma) == (0.01, 0.01, 0.001)
    with pytest.raises(HyperparameterError, match="'predictor_type' has invalid value 'multiclass_classifier'"):
        SCHEMA.parse({**base, "predictor_type": "multiclass_classifier"})
    with pytest.raises(HyperparameterError, match="'factors_init_scale' is not set"):
        SCHEMA.parse({**base, "factors_init_method": "uniform"})
    with pytest.raises(HyperparameterError, match="'bias_init_value' is not set"):
        SCHEMA.parse({**base, "bias_init_method": "constant"})
    with pytest.raises(HyperparameterError, match="'num_factors' has invalid value '0'"):
        SCHEMA.parse({**base, "num_factors": "0"})
    with pytest.raises(HyperparameterError, match="'clip_gradient' has invalid value '0'"):
        SCHEMA.parse({**base, "clip_gradient": "0"})
    constant = SCHEMA.build({**base, "linear_init_method": "constant", "linear_init_value": "0.25",
                             "factors_init_method": "uniform", "factors_init_scale": "0.5"})
    assert (constant.linear_init_value, constant.factors_init_scale) == (0.25, 0.5)


def test_init_methods_reach_the_model(tmp_path):
    x, y = planted(50, "regressor")
    hp = {**HP, "predictor_type": "regressor", "epochs": 1, "linear_lr": 0, "factors_lr": 0, "bias_lr": 0,
          "bias_init_method": "constant", "bias_init_value": 1.5, "linear_init_method": "constant",
          "linear_init_value": -0.25, "factors_init_method": "uniform", "factors_init_scale": 0.01}
    job = run_job(tmp_path, hp, {"train": sparse_bytes(x, y)})
    assert job.status == 0, job.failure
    arrays = load_model(tmp_path / "model").arrays
    assert arrays["w0_weight"].tolist() == [1.5] and np.all(arrays["w1_weight"] == -0.25)
    assert np.abs(arrays["v"]).max() <= 0.01 and np.abs(arrays["v"]).max() > 0.005


# --- memory ---------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
import resource, sys
import numpy as np, scipy.sparse as sp
from pipealgos.algorithms import factorization_machines as fm
from pipealgos.algorithms.base import TrainingContext
from pipealgos.io import Minibatch
from pipealgos.platform.schemas.factorization_machines import SCHEMA
from pipealgos.testing import MemoryChannels, RecordingReport

dim, factors = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = sp.csr_matrix((np.ones(2000 * 20, np.float32), rng.integers(0, dim, 2000 * 20), np.arange(0, 2000 * 20 + 1, 20)),
                  shape=(2000, dim))
x.sum_duplicates()
y = rng.integers(0, 2, 2000).astype(np.float32)
channels = MemoryChannels({"train": [Minibatch(x[i : i + 500], y[i : i + 500]) for i in range(0, 2000, 500)]})
params = SCHEMA.build({"feature_dim": dim, "num_factors": factors, "predictor_type": "binary_classifier",
                       "mini_batch_size": 100, "epochs": 2})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = fm.train(params, TrainingContext(channels, RecordingReport(), sparse_input=True))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, model.feature_dim)
"""


def test_a_ten_million_feature_model_trains_in_the_memory_of_its_parameters():
    """Peak memory grows by the parameters and their AdaGrad state (2 x 4 bytes x feature_dim x
    (1 + num_factors)) plus a small allowance: nothing per minibatch is sized by feature_dim."""
    dim, factors = 10_000_000, 2
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(dim), str(factors)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    grown, width = map(int, done.stdout.split())
    state = 2 * 4 * dim * (1 + factors)
    assert width == dim
    assert grown <= state + 64 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB for {state / 2**20:.0f} MiB of state"
