"""One suite, every registered algorithm: what any pipealgos algorithm must do.

Each :class:`~pipealgos.platform.registry.AlgorithmSpec` in ``ALGORITHMS`` is run with its own
small ``conformance_hyperparameters`` on synthetic data: File and Pipe mode train the same
model; the same seed trains the same model; save → load → predict round-trips; the HTTP
server (every request and response format) answers what the model predicts in-process; a
missing required or an out-of-range hyperparameter fails the job with a message naming it
and leaves no model; the manifest describes the arrays. An algorithm joins by registering.

The data: non-negative integer counts drawn around three profiles (Poisson), so that it is
valid input for all seven algorithms (LDA and NTM need word counts); supervised algorithms
get the label "record belongs to profile 0" (0/1, usable by classifiers and regressors).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from mlroot import FifoFeeder, make_ml_root, recordio_bytes, write_channel_files

from pipealgos.algorithms.base import TrainingContext
from pipealgos.io import record_pb2
from pipealgos.io.recordio import iter_records
from pipealgos.platform.channels import JobChannels
from pipealgos.platform.config import MLRoot, read_input_data_config
from pipealgos.platform.hyperparameters import Param
from pipealgos.platform.metrics import MetricsReporter
from pipealgos.platform.model_store import load_model, save_model
from pipealgos.platform.registry import ALGORITHMS, AlgorithmSpec, unregister
from pipealgos.platform.train import run_training
from pipealgos.serve.app import create_app
from toy_algorithm import SPEC as TOY
from toy_algorithm import register_toy

SPECS = [*ALGORITHMS.values(), TOY]  # the test-only algorithm joins like any other
ROWS = 240
TEST_ROWS = 60
REQUEST_ROWS = 25
EXTRA_PIPE_PASSES = 3  # FIFOs fed beyond ``epochs``; the ones an algorithm does not open are drained

JSON, JSONLINES, CSV, RECORDIO = ("application/json", "application/jsonlines", "text/csv",
                                  "application/x-recordio-protobuf")


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    register_toy()
    yield
    unregister(TOY.name)


def _by_name(specs):
    return pytest.mark.parametrize("spec", specs, ids=[s.name for s in specs])


def synthetic(spec: AlgorithmSpec, n: int, seed: int = 0, channel: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
    """Rows for ``channel``, labelled when the algorithm declares that channel labelled."""
    d = int(spec.conformance.hyperparameters["feature_dim"])
    rng = np.random.default_rng(seed)
    profiles = rng.gamma(1.0, 3.0, size=(3, d))
    group = rng.integers(0, 3, n)
    features = rng.poisson(profiles[group]).astype(np.float32)
    labels = (group == 0).astype(np.float32) if spec.channel(channel).label_size else None
    return features, labels


def _drain(root: Path, channel: str, feeder: FifoFeeder) -> None:
    """Let feeders of passes the algorithm never opened finish (their writes then fail with
    EPIPE, which the feeder ignores)."""
    for epoch, thread in enumerate(feeder.threads):
        if thread.is_alive():
            fd = os.open(root / "input" / "data" / f"{channel}_{epoch}", os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
    feeder.join()


def train_job(spec: AlgorithmSpec, root: Path, mode: str = "File", hyperparameters: dict | None = None) -> int:
    """A one-host job on the synthetic data (train in 3 files, or one FIFO per pass; a test
    channel); returns the exit status."""
    hp = dict(spec.conformance.hyperparameters if hyperparameters is None else hyperparameters)
    x, y = synthetic(spec, ROWS)
    tx, ty = synthetic(spec, TEST_ROWS, seed=1, channel="test")
    channels = {name: {"TrainingInputMode": mode} for name in ("train", "test")}
    make_ml_root(root, hp, channels)
    parts = [recordio_bytes(x[c], None if y is None else y[c]) for c in np.array_split(np.arange(ROWS), 3)]
    test = recordio_bytes(tx, ty)
    if mode == "File":
        write_channel_files(root, "train", parts)
        write_channel_files(root, "test", [test])
        return run_training(MLRoot(root), spec.name)
    passes = int(hp.get("epochs", 1)) + EXTRA_PIPE_PASSES
    feeders = {"train": FifoFeeder(root, "train", [b"".join(parts)] * passes),
               "test": FifoFeeder(root, "test", [test] * passes)}
    try:
        return run_training(MLRoot(root), spec.name)
    finally:
        for channel, feeder in feeders.items():
            _drain(root, channel, feeder)


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return load_model(root / "model").arrays


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Model directories trained once per algorithm (File mode), shared by the module."""
    cache: dict[str, Path] = {}

    def get(spec: AlgorithmSpec) -> Path:
        if spec.name not in cache:
            root = tmp_path_factory.mktemp(f"trained-{spec.name}")
            assert train_job(spec, root) == 0, (root / "output" / "failure").read_text()
            cache[spec.name] = root
        return cache[spec.name]

    return get


# --- training --------------------------------------------------------------------------------


@_by_name(SPECS)
def test_file_and_pipe_train_the_same_model(spec, tmp_path, trained):
    assert train_job(spec, tmp_path, mode="Pipe") == 0, (tmp_path / "output" / "failure").read_text()
    file_arrays, pipe_arrays = _arrays(trained(spec)), _arrays(tmp_path)
    assert file_arrays.keys() == pipe_arrays.keys()
    for name in file_arrays:
        np.testing.assert_array_equal(file_arrays[name], pipe_arrays[name], err_msg=name)


@_by_name(SPECS)
def test_same_seed_same_model(spec, tmp_path, trained):
    assert train_job(spec, tmp_path) == 0
    first, second = _arrays(trained(spec)), _arrays(tmp_path)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@_by_name(SPECS)
def test_manifest_is_complete(spec, trained):
    root = trained(spec)
    stored = load_model(root / "model")
    manifest = stored.manifest
    assert manifest["algorithm"] == spec.name
    expected = spec.schema.parse(spec.conformance.hyperparameters)
    assert manifest["hyperparameters"] == json.loads(json.dumps(expected))
    assert set(manifest["arrays"]) == set(stored.arrays) and stored.arrays
    for name, array in stored.arrays.items():
        assert manifest["arrays"][name] == {"shape": list(array.shape), "dtype": str(array.dtype)}
    assert (root / "model" / manifest["arrays_file"]).is_file()
    assert manifest["pipealgos_version"]


# --- the model object ------------------------------------------------------------------------


@_by_name(SPECS)
def test_save_load_predict_round_trip(spec, tmp_path):
    hp = spec.conformance.hyperparameters
    root = make_ml_root(tmp_path / "job", hp, {"train": {"TrainingInputMode": "File"}})
    x, y = synthetic(spec, ROWS)
    write_channel_files(root, "train", [recordio_bytes(x, y)])
    ml = MLRoot(root)
    values = spec.schema.parse(hp)
    ctx = TrainingContext(JobChannels(ml, read_input_data_config(ml), spec),
                          MetricsReporter("algo-1", io.StringIO()), seed=3)
    model = spec.train(spec.schema.to_params(values), ctx)

    arrays = model.to_arrays()
    save_model(tmp_path / "model", spec.name, values, arrays)
    stored = load_model(tmp_path / "model")
    for name in arrays:
        np.testing.assert_array_equal(stored.arrays[name], arrays[name])
    loaded = spec.model_type.from_arrays(stored.arrays, stored.hyperparameters)
    for name, array in loaded.to_arrays().items():
        np.testing.assert_array_equal(array, arrays[name])

    rows, _ = synthetic(spec, REQUEST_ROWS, seed=2)
    before = rows.copy()
    ours, theirs = model.predict(rows), loaded.predict(rows)
    np.testing.assert_array_equal(rows, before, err_msg="predict must not modify its input")
    keys = _output_keys(spec, theirs)
    for key in keys:
        assert theirs[key].shape[0] == REQUEST_ROWS and theirs[key].ndim in (1, 2)
        # The saved arrays are float32; an in-memory model may hold float64.
        np.testing.assert_allclose(theirs[key], ours[key], rtol=1e-4, atol=1e-4, err_msg=key)


def _output_keys(spec: AlgorithmSpec, outputs: dict) -> list[str]:
    """The outputs a model returned, in response order. ``spec.outputs`` lists every field
    the algorithm can emit; a model may emit a subset (a linear-learner regressor has no
    ``predicted_label``), never a field outside it."""
    keys = [k for k in spec.outputs if k in outputs]
    assert keys and set(outputs) == set(keys), (sorted(outputs), spec.outputs)
    return keys


# --- serving ---------------------------------------------------------------------------------


def _json_instances(rows: np.ndarray, form: str) -> list[dict]:
    if form == "features":
        return [{"features": row.tolist()} for row in rows]
    if form == "values":
        return [{"data": {"features": {"values": row.tolist()}}} for row in rows]
    return [{"data": {"features": {"keys": np.flatnonzero(row).tolist(), "shape": [len(row)],
                                   "values": row[row != 0].tolist()}}} for row in rows]


def _request(rows: np.ndarray, kind: str) -> tuple[bytes, str]:
    if kind.startswith("json-"):
        return json.dumps({"instances": _json_instances(rows, kind[5:])}).encode(), JSON
    if kind == "jsonlines":
        return "".join(json.dumps(i) + "\n" for i in _json_instances(rows, "features")).encode(), JSONLINES
    if kind == "csv":
        return "".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows).encode(), CSV
    return recordio_bytes(rows), RECORDIO


def _parse_response(body: bytes, accept: str, spec: AlgorithmSpec, widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Outputs by key (those in ``widths``, in order) as float32 arrays, from any format."""
    if accept == RECORDIO:
        records = [record_pb2.Record.FromString(p) for p in iter_records(io.BytesIO(body))]
        out = {k: np.array([list(r.label[k].float32_tensor.values) for r in records], dtype=np.float32)
               for k in widths}
        assert all(len(r.features) == 0 and set(r.label) == set(widths) for r in records)
    elif accept == CSV:
        table = np.array([[np.float32(v) for v in line.split(",")] for line in body.decode().splitlines()])
        out, start = {}, 0
        for key, width in widths.items():
            out[key] = table[:, start : start + width]
            start += widths[key]
        assert start == table.shape[1]
    else:
        if accept == JSON:
            document = json.loads(body)
            assert list(document) == [spec.response_key]
            items = document[spec.response_key]
        else:
            items = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        assert all(list(item) == list(widths) for item in items)
        out = {k: np.array([np.atleast_1d(item[k]) for item in items], dtype=np.float32) for k in widths}
    return out


REQUEST_KINDS = ["json-features", "json-values", "json-sparse", "jsonlines", "csv", "recordio"]
ACCEPTS = [JSON, JSONLINES, CSV, RECORDIO]


@_by_name(SPECS)
@pytest.mark.parametrize("accept", ACCEPTS, ids=["json", "jsonlines", "csv", "recordio"])
@pytest.mark.parametrize("kind", REQUEST_KINDS)
def test_server_answers_what_the_model_predicts(spec, kind, accept, trained):
    model_dir = trained(spec) / "model"
    stored = load_model(model_dir)
    model = spec.model_type.from_arrays(stored.arrays, stored.hyperparameters)
    rows, _ = synthetic(spec, REQUEST_ROWS, seed=2)
    expected = {k: np.asarray(v, dtype=np.float32) for k, v in model.predict(rows).items()}
    widths = {k: 1 if expected[k].ndim == 1 else expected[k].shape[1] for k in _output_keys(spec, expected)}

    client = create_app(model_dir).test_client()
    assert client.get("/ping").status_code == 200
    body, content_type = _request(rows, kind)
    response = client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": accept})
    if content_type not in spec.request_types:
        assert response.status_code == 415, response.get_data(as_text=True)
        assert spec.name in response.get_data(as_text=True) and ", ".join(spec.request_types) in response.get_data(as_text=True)
        return
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].split(";")[0] == accept
    got = _parse_response(response.get_data(), accept, spec, widths)
    for key in widths:
        want = expected[key].reshape(REQUEST_ROWS, -1)
        np.testing.assert_allclose(got[key].reshape(REQUEST_ROWS, -1), want, rtol=1e-6, atol=1e-6, err_msg=key)


# --- hyperparameter errors -------------------------------------------------------------------


def _out_of_range(param: Param) -> str | None:
    """A value the schema must refuse for ``param`` (None when every value is valid)."""
    if param.kind is list:
        return '["not-a-choice"]' if param.choices else None
    if param.choices:
        return "not-a-choice"
    if param.kind is bool:
        return "maybe"
    if param.low is not None:
        low = param.low if param.low_open else param.low - (1 if param.kind is int else 0.5)
        return str(int(low) if param.kind is int else low)
    if param.high is not None:
        return str(param.high + 1)
    return "not-a-number" if param.kind in (int, float) else None


def _failing_cases():
    missing, bad = [], []
    for spec in SPECS:
        for param in spec.schema.params:
            if param.required:
                missing.append(pytest.param(spec, param.name, id=f"{spec.name}-{param.name}"))
            value = _out_of_range(param)
            if value is not None:
                bad.append(pytest.param(spec, param.name, value, id=f"{spec.name}-{param.name}={value}"))
    return missing, bad


MISSING, OUT_OF_RANGE = _failing_cases()


def _assert_failed_naming(root: Path, status: int, name: str) -> None:
    assert status != 0
    failure = (root / "output" / "failure").read_text()
    assert f"'{name}'" in failure, failure
    assert not (root / "model" / "manifest.json").exists()
    assert not list((root / "model").glob("*.npz"))


@pytest.mark.parametrize("spec,name", MISSING)
def test_missing_required_hyperparameter_fails_naming_it(spec, name, tmp_path):
    hp = {k: v for k, v in spec.conformance.hyperparameters.items() if k != name}
    _assert_failed_naming(tmp_path, train_job(spec, tmp_path, hyperparameters=hp), name)


@pytest.mark.parametrize("spec,name,value", OUT_OF_RANGE)
def test_out_of_range_hyperparameter_fails_naming_it(spec, name, value, tmp_path):
    hp = {**spec.conformance.hyperparameters, name: value}
    _assert_failed_naming(tmp_path, train_job(spec, tmp_path, hyperparameters=hp), name)


def test_every_algorithm_declares_conformance_hyperparameters():
    for spec in SPECS:
        assert "feature_dim" in spec.conformance.hyperparameters, spec.name
        spec.schema.parse(spec.conformance.hyperparameters)
