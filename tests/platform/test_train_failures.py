"""Every kind of bad input fails the job cleanly: a readable output/failure naming the problem,
a non-zero exit, and no model."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import make_ml_root, recordio_bytes, write_channel_files

from pipealgos.io import record_pb2
from pipealgos.io.recordio import encode_frame
from pipealgos.platform.config import MLRoot
from pipealgos.platform.train import run_training

GOOD_HP = {"feature_dim": 4, "num_components": 2, "mini_batch_size": 10}
ROWS = np.arange(40, dtype=np.float32).reshape(10, 4)


def _record(**features) -> bytes:
    record = record_pb2.Record()
    for key, (values, keys, shape) in features.items():
        tensor = record.features[key].float32_tensor
        tensor.values.extend(values)
        tensor.keys.extend(keys)
        tensor.shape.extend(shape)
    return record.SerializeToString()


def _fail(tmp_path, data: bytes | None = None, hp=None, channels=None, monkeypatch=None):
    root = make_ml_root(tmp_path, GOOD_HP if hp is None else hp,
                        channels if channels is not None else {"train": {"TrainingInputMode": "File"}})
    if data is not None:
        write_channel_files(root, "train", [data])
    status = run_training(MLRoot(root), "pca")
    assert status != 0
    failure = (root / "output" / "failure").read_text()
    assert not (root / "model" / "manifest.json").exists()
    assert not list((root / "model").iterdir()), "a failed job must leave no (partial) model"
    return failure


GOOD = recordio_bytes(ROWS)
FRAME = len(GOOD) // 10


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("wrong magic", b"\x00\x00\x00\x00" + GOOD[4:], ["magic", "byte offset 0", "part-0000.pbr"]),
        ("truncated header", GOOD + GOOD[:5], ["truncated frame header", f"byte offset {len(GOOD)}"]),
        ("truncated payload", GOOD[: FRAME * 3 + 20], ["truncated record", "record 3", f"byte offset {FRAME * 3}"]),
        ("length past end", GOOD[: FRAME * 9] + struct.pack("<II", 0xCED7230A, 10_000) + b"\x00" * 40,
         ["10000 payload bytes", "record 9"]),
        ("not a Record", GOOD[:FRAME] + encode_frame(b"\xff\xff\xff\xff\xff"), ["not an aialgs.data.Record", "record 1"]),
        ("no values feature", encode_frame(_record(pixels=([1, 2, 3, 4], [], []))), ["no 'values' feature", "pixels"]),
        ("dense length", recordio_bytes(np.ones((3, 5), np.float32)), ["5 features", "feature_dim 4", "record 0"]),
        ("sparse key out of range", encode_frame(_record(values=([1.0], [7], [4]))), ["sparse key 7", "shape [4]"]),
        ("nan", recordio_bytes(np.where(ROWS == 21, np.nan, ROWS)), ["NaN or infinity", "record 5"]),
        ("inf sparse", recordio_bytes(sp.csr_matrix(np.where(ROWS == 30, np.inf, ROWS))), ["NaN or infinity", "record 7"]),
        ("empty channel", b"", ["train channel holds no records"]),
    ],
)
def test_bad_data(tmp_path, name, data, expected):
    failure = _fail(tmp_path, data)
    assert "channel 'train'" in failure, failure
    for text in expected:
        assert text in failure, f"{name}: {text!r} not in {failure!r}"


@pytest.mark.parametrize(
    "hp, expected",
    [
        ({"feature_dim": 4, "mini_batch_size": 10}, ["Missing required hyperparameter 'num_components'"]),
        ({**GOOD_HP, "feature_dim": "four"}, ["'feature_dim'", "'four'", "integer"]),
        ({**GOOD_HP, "num_components": 9}, ["'num_components' (9)", "'feature_dim' (4)"]),
        ({**GOOD_HP, "num_compnents": 2}, ["Unknown hyperparameter", "'num_compnents'", "num_components"]),
        ({**GOOD_HP, "algorithm_mode": "fast"}, ["'algorithm_mode'", "regular, randomized"]),
    ],
)
def test_bad_hyperparameters(tmp_path, hp, expected):
    failure = _fail(tmp_path, GOOD, hp=hp)
    for text in expected:
        assert text in failure, failure


def test_no_train_channel(tmp_path):
    failure = _fail(tmp_path, None, channels={"test": {"TrainingInputMode": "File"}})
    assert "'train'" in failure and "missing" in failure


def test_unreadable_content_type(tmp_path):
    failure = _fail(tmp_path, GOOD, channels={"train": {"TrainingInputMode": "File", "ContentType": "image/jpeg"}})
    assert "image/jpeg" in failure and "text/csv" in failure


def test_pipe_fifo_that_never_appears(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEALGOS_PIPE_TIMEOUT", "0.5")
    failure = _fail(tmp_path, None, channels={"train": {"TrainingInputMode": "Pipe"}})
    assert "train_0" in failure and "did not appear within 0.5 s" in failure


def test_csv_ragged_row_names_file_and_line(tmp_path):
    root = make_ml_root(tmp_path, GOOD_HP, {"train": {"TrainingInputMode": "File", "ContentType": "text/csv"}})
    folder = root / "input" / "data" / "train"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("1,2,3,4\n5,6,7,8\n9,10,11\n")
    assert run_training(MLRoot(root), "pca") != 0
    failure = (root / "output" / "failure").read_text()
    assert "a.csv" in failure and "line 3" in failure


def test_success_writes_manifest_and_no_failure(tmp_path):
    root = make_ml_root(tmp_path, GOOD_HP, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [GOOD])
    assert run_training(MLRoot(root), "pca") == 0
    assert not (root / "output" / "failure").exists()
    manifest = json.loads((root / "model" / "manifest.json").read_text())
    assert manifest["algorithm"] == "pca"
    assert manifest["arrays"]["v"]["shape"] == [4, 2]
    assert manifest["hyperparameters"]["num_components"] == 2
    assert sorted(p.name for p in (root / "model").iterdir()) == ["manifest.json", "model_algo-1.npz"]


def test_every_hyperparameter_problem_is_reported_at_once(tmp_path):
    failure = _fail(tmp_path, GOOD, hp={**GOOD_HP, "num_compnents": 2, "algorithm_mode": "fast", "feature_dim": "x"})
    assert failure.startswith("ClientError: 3 hyperparameter problems")
    for text in ("'num_compnents'", "'algorithm_mode' has invalid value 'fast'", "'feature_dim' has invalid value 'x'"):
        assert text in failure, failure


@pytest.mark.parametrize("value", ["inf", "-1e39", "nan"])
def test_float_hyperparameters_must_be_finite_in_float32(tmp_path, value):
    root = make_ml_root(tmp_path, {"predictor_type": "regressor", "init_bias": value}, {"train": {}})
    assert run_training(MLRoot(root), "linear-learner") == 1
    failure = (root / "output" / "failure").read_text()
    assert f"'init_bias' has invalid value '{value}'" in failure and "finite in float32" in failure


def _config_failure(tmp_path, name: str, write) -> str:
    root = make_ml_root(tmp_path, GOOD_HP, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [GOOD])
    path = root / "input" / "config" / name
    path.unlink()
    write(path)
    assert run_training(MLRoot(root), "pca") == 1, "a bad config file is the user's to fix: exit 1"
    return (root / "output" / "failure").read_text()


def test_config_files_that_are_not_utf8_json_files_are_client_errors(tmp_path):
    failure = _config_failure(tmp_path / "a", "hyperparameters.json", lambda p: p.write_bytes(b'{"feature_dim": "\xff"}'))
    assert "hyperparameters.json is not UTF-8 text" in failure
    failure = _config_failure(tmp_path / "b", "inputdataconfig.json", lambda p: p.mkdir())
    assert "inputdataconfig.json is not a file" in failure


def test_a_content_type_that_is_not_a_string_is_a_client_error(tmp_path):
    root = make_ml_root(tmp_path, GOOD_HP, {"train": {"TrainingInputMode": "File", "ContentType": 5}})
    write_channel_files(root, "train", [GOOD])
    assert run_training(MLRoot(root), "pca") == 1
    assert "channel 'train' has ContentType=5; ContentType must be a string" in (root / "output" / "failure").read_text()


def test_a_pipe_timeout_that_is_not_a_number_is_a_client_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEALGOS_PIPE_TIMEOUT", "abc")
    failure = _fail(tmp_path, GOOD)
    assert failure.startswith("ClientError: PIPEALGOS_PIPE_TIMEOUT='abc' is not a number of seconds > 0")
    assert "Set PIPEALGOS_PIPE_TIMEOUT to a number of seconds" in failure


def test_a_missing_ml_root_is_named(tmp_path):
    assert run_training(MLRoot(tmp_path / "nowhere"), "pca") == 1
    assert "the ML root" in (tmp_path / "nowhere" / "output" / "failure").read_text()
    assert "does not exist" in (tmp_path / "nowhere" / "output" / "failure").read_text()


def test_a_success_clears_the_failure_an_earlier_run_left(tmp_path):
    _fail(tmp_path, GOOD, hp={**GOOD_HP, "num_components": 9})
    write_channel_files(tmp_path, "train", [GOOD])
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in GOOD_HP.items()}))
    assert run_training(MLRoot(tmp_path), "pca") == 0
    assert not (tmp_path / "output" / "failure").exists()


def test_a_model_holding_nan_is_never_saved():
    from pipealgos.platform.train import _check_finite

    _check_finite({"w": np.ones(3, np.float32), "labels": np.arange(3)}, "pca")
    with pytest.raises(RuntimeError, match="non-finite values in model array 'w'"):
        _check_finite({"w": np.array([1.0, np.nan], np.float32)}, "pca")


def test_unknown_algorithm_names_the_choices(tmp_path):
    root = make_ml_root(tmp_path, GOOD_HP, {"train": {"TrainingInputMode": "File"}})
    assert run_training(MLRoot(root), "xgboost") == 1
    assert "unknown algorithm 'xgboost'" in (root / "output" / "failure").read_text()


def test_bad_compute_threads_setting_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEALGOS_COMPUTE_THREADS", "two")
    failure = _fail(tmp_path, GOOD)
    assert "PIPEALGOS_COMPUTE_THREADS='two' is not a thread count" in failure
