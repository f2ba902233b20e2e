"""A 3-host linear-learner job: three real `train` processes on loopback, each with its own ML
root and a third of the training files, reaching the 1-host job's quality."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from linear_learner_jobs import run_job
from mlroot import make_ml_root, recordio_bytes, write_channel_files

from pipealgos.algorithms.linear_learner import LinearLearnerModel
from pipealgos.platform.model_store import load_model
from pipealgos.platform.runner.hosts import free_port

HOSTS = ("algo-1", "algo-2", "algo-3")
HP = {"predictor_type": "binary_classifier", "feature_dim": 10, "mini_batch_size": 200, "epochs": 4,
      "num_models": 4, "num_point_for_scaler": 1000}


def _data():
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(12000, 10)) * 4 + 2).astype(np.float32)
    y = ((x - 2) @ rng.normal(size=10) + rng.normal(size=12000) > 0).astype(np.float32)
    return x, y


@pytest.mark.slow
def test_three_hosts_reach_the_single_host_quality(tmp_path):
    x, y = _data()
    train, validation, test = (x[:9000], y[:9000]), (x[9000:10500], y[9000:10500]), (x[10500:], y[10500:])
    single = run_job(tmp_path / "single", HP, {"train": train, "validation": validation})
    assert single.status == 0, single.failure

    env = {**os.environ, "PIPEALGOS_MASTER_ADDR": "127.0.0.1", "PIPEALGOS_MASTER_PORT": str(free_port()),
           "PIPEALGOS_ALGORITHM": "linear-learner", "PIPEALGOS_COLLECTIVE_TIMEOUT": "60"}
    # Uneven shards (ShardedByS3Key splits by file): the hosts run different numbers of minibatches.
    shards = np.split(np.arange(9000), [2500, 6000])
    processes = []
    for host, rows in zip(HOSTS, shards):
        root = tmp_path / host
        make_ml_root(root, HP, {"train": {"TrainingInputMode": "File"}, "validation": {"TrainingInputMode": "File"}},
                     hosts=HOSTS, current=host)
        write_channel_files(root, "train", [recordio_bytes(train[0][rows], train[1][rows])])
        write_channel_files(root, "validation", [recordio_bytes(*validation)])
        processes.append(subprocess.Popen([sys.executable, "-m", "pipealgos.cli", "train", "--ml-root", str(root)],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], "\n".join(logs)

    stored = load_model(tmp_path / "algo-1" / "model")
    multi = LinearLearnerModel.from_arrays(stored.arrays, stored.hyperparameters)
    assert not (tmp_path / "algo-2" / "model" / "manifest.json").exists()  # the leader writes the model
    accuracy = {name: np.mean(model.predict(test[0])["predicted_label"] == test[1])
                for name, model in (("single", single.model()), ("multi", multi))}
    assert accuracy["multi"] >= accuracy["single"] - 0.01, accuracy
    # Every host selected the same model and stopped at the same epoch.
    chosen = [line.split("] ", 1)[1] for log in logs for line in log.splitlines() if "Best model found" in line]
    assert len(chosen) == 3 and len(set(chosen)) == 1
