"""A 2-host factorization-machines job: two real `train` processes on gloo over loopback, each
with its own ML root and half of MovieLens-100k's training rows, reaching the 1-host job's test
RMSE within 1 % (the touched rows' gradients are all-gathered every minibatch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlroot import make_ml_root, write_channel_files
from test_factorization_machines import run_job, sparse_bytes

from pipealgos.algorithms.factorization_machines import FactorizationMachineModel
from pipealgos.platform.model_store import load_model
from pipealgos.platform.runner.hosts import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fm_movielens import TUNED_REGRESSOR, load  # noqa: E402

HOSTS = ("algo-1", "algo-2")
EPOCHS = 4
BATCH = 200


def _rmse(model: FactorizationMachineModel, x, y) -> float:
    return float(np.sqrt(np.mean((model.predict(x)["score"] - y) ** 2)))


@pytest.mark.slow
def test_two_hosts_reach_the_single_host_rmse(tmp_path):
    data = load()
    hp = {**TUNED_REGRESSOR, "feature_dim": data.feature_dim, "epochs": EPOCHS, "mini_batch_size": BATCH}
    single = run_job(tmp_path / "single", hp, {"train": sparse_bytes(data.train_x, data.train_rating)})
    assert single.status == 0, single.failure

    # Each host takes half the global minibatch, so the 2-host job steps as the 1-host one does.
    hosts_hp = {**hp, "mini_batch_size": BATCH // len(HOSTS)}
    env = {**os.environ, "PIPEALGOS_MASTER_ADDR": "127.0.0.1", "PIPEALGOS_MASTER_PORT": str(free_port()),
           "PIPEALGOS_ALGORITHM": "factorization-machines", "PIPEALGOS_COLLECTIVE_TIMEOUT": "60"}
    # Uneven shards: the hosts run different numbers of minibatches.
    shards = np.split(np.arange(data.train_x.shape[0]), [36_000])
    processes = []
    for host, rows in zip(HOSTS, shards):
        root = tmp_path / host
        make_ml_root(root, hosts_hp, {"train": {"TrainingInputMode": "File"}}, hosts=HOSTS, current=host)
        write_channel_files(root, "train", [sparse_bytes(data.train_x[rows], data.train_rating[rows])])
        processes.append(subprocess.Popen([sys.executable, "-m", "pipealgos.cli", "train", "--ml-root", str(root)],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(logs)
    assert not (tmp_path / "algo-2" / "model" / "manifest.json").exists()  # the leader writes the model

    stored = load_model(tmp_path / "algo-1" / "model")
    multi = FactorizationMachineModel.from_arrays(stored.arrays, stored.hyperparameters)
    single_rmse = _rmse(single.model(), data.test_x, data.test_rating)
    multi_rmse = _rmse(multi, data.test_x, data.test_rating)
    assert multi_rmse <= single_rmse * 1.01, (single_rmse, multi_rmse)
    # Every host saw every row: the per-epoch training loss is over all hosts' rows, the same on both.
    epoch_lines = [[line.split(", ", 1)[1] for line in log.splitlines() if "epoch=" in line] for log in logs]
    assert len(epoch_lines[0]) == EPOCHS and epoch_lines[0] == epoch_lines[1]
