"""The config readers accept what SageMaker (and its local mode) write."""

from __future__ import annotations

import json

import pytest

from pipealgos.platform.config import (ConfigError, MLRoot, read_checkpoint_config, read_hyperparameters,
                                       read_input_data_config, read_resource_config)


def _write(root, name, data):
    path = root / "input" / "config"
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(data) if not isinstance(data, str) else data)
    return MLRoot(root)


def test_ml_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("PIPEALGOS_ML_ROOT", raising=False)
    monkeypatch.delenv("SAGEMAKER_BASE_DIR", raising=False)
    assert MLRoot.resolve().root.as_posix() == "/opt/ml"
    monkeypatch.setenv("PIPEALGOS_ML_ROOT", str(tmp_path))
    assert MLRoot.resolve().root == tmp_path
    assert MLRoot.resolve("/x").root.as_posix() == "/x"


def test_local_mode_input_config_has_only_the_mode(tmp_path):
    ml = _write(tmp_path, "inputdataconfig.json", {"train": {"TrainingInputMode": "File"}})
    channel = read_input_data_config(ml)["train"]
    assert channel.input_mode == "File" and channel.content_type is None
    assert channel.distribution is None and channel.compression == "None"


def test_full_input_config(tmp_path):
    ml = _write(tmp_path, "inputdataconfig.json", {
        "validation": {"ContentType": "text/csv;label_size=1", "TrainingInputMode": "Pipe",
                       "S3DistributionType": "ShardedByS3Key", "RecordWrapperType": "None", "CompressionType": "Gzip"}})
    channel = read_input_data_config(ml)["validation"]
    assert (channel.input_mode, channel.content_type, channel.distribution, channel.compression) == (
        "Pipe", "text/csv;label_size=1", "ShardedByS3Key", "Gzip")


def test_resource_config_variants(tmp_path):
    assert read_resource_config(MLRoot(tmp_path)).hosts == ("algo-1",)
    ml = _write(tmp_path, "resourceconfig.json", {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
                                                  "network_interface_name": "eth0", "current_instance_type": "local"})
    resources = read_resource_config(ml)
    assert resources.rank == 1 and not resources.is_leader and resources.network_interface_name == "eth0"
    _write(tmp_path, "resourceconfig.json", {"current_host": "algo-9", "hosts": ["algo-1"]})
    with pytest.raises(ConfigError, match="algo-9"):
        read_resource_config(ml)


def test_hyperparameters_values_become_strings(tmp_path):
    ml = _write(tmp_path, "hyperparameters.json", {"k": "10", "epochs": 3, "eval_metrics": ["msd"]})
    assert read_hyperparameters(ml) == {"k": "10", "epochs": "3", "eval_metrics": '["msd"]'}
    _write(tmp_path, "hyperparameters.json", "{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_hyperparameters(ml)


def test_checkpoint_config(tmp_path):
    ml = MLRoot(tmp_path)
    assert read_checkpoint_config(ml) is None
    _write(tmp_path, "checkpointconfig.json", {"LocalPath": "/opt/ml/checkpoints", "S3Uri": "s3://b/p"})
    assert read_checkpoint_config(ml).s3_uri == "s3://b/p"
