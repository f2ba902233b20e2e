"""A 2-host NTM job: two real `train` processes on loopback (gloo), each with its own ML root
and an uneven share of the training documents, reaching the 1-host job's validation loss
within 2% (the issue's bar) and keeping the hosts' parameters identical."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import make_ml_root, recordio_bytes, write_channel_files

from pipealgos.platform.runner.hosts import free_port

HOSTS = ("algo-1", "algo-2")
VOCAB, TOPICS = 60, 4
HP = {"feature_dim": VOCAB, "num_topics": TOPICS, "mini_batch_size": 100, "epochs": 20, "optimizer": "adam",
      "learning_rate": 0.02, "num_patience_epochs": 20}
VALIDATION_LOSS = re.compile(r"epoch=(\d+), validation total_loss <loss>=(\S+)")


def _documents(n: int, seed: int) -> sp.csr_matrix:
    """Each document mixes two of the topics; topic t owns words [15t, 15t + 15)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, VOCAB), dtype=np.float32)
    for row in range(n):
        for topic in rng.choice(TOPICS, 2, replace=False):
            x[row, 15 * topic:15 * topic + 15] += rng.multinomial(30, np.full(15, 1 / 15))
    return sp.csr_matrix(x)


def _start(root: Path, train: sp.csr_matrix, validation: sp.csr_matrix, hosts, host, env) -> subprocess.Popen:
    make_ml_root(root, HP, {"train": {}, "validation": {}}, hosts=hosts, current=host)
    write_channel_files(root, "train", [recordio_bytes(train)])
    write_channel_files(root, "validation", [recordio_bytes(validation)])
    return subprocess.Popen([sys.executable, "-m", "pipealgos.cli", "train", "--ml-root", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_validation_loss(log: str) -> float:
    return float(VALIDATION_LOSS.findall(log)[-1][1])


@pytest.mark.slow
def test_two_hosts_reach_the_single_host_validation_loss(tmp_path):
    train, validation = _documents(2000, 0), _documents(300, 1)
    env = {**os.environ, "PIPEALGOS_MASTER_ADDR": "127.0.0.1", "PIPEALGOS_ALGORITHM": "ntm",
           "PIPEALGOS_COLLECTIVE_TIMEOUT": "60"}
    single = _start(tmp_path / "single", train, validation, ("algo-1",), "algo-1",
                    {**env, "PIPEALGOS_MASTER_PORT": str(free_port())})
    single_log = single.communicate(timeout=180)[0]
    assert single.returncode == 0, single_log

    env["PIPEALGOS_MASTER_PORT"] = str(free_port())
    shards = (train[:800], train[800:])  # uneven: the hosts run different numbers of minibatches
    processes = [_start(tmp_path / host, shard, validation, HOSTS, host, env) for host, shard in zip(HOSTS, shards)]
    logs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(logs)

    one, two = _final_validation_loss(single_log), _final_validation_loss(logs[0])
    assert two <= one * 1.02, (one, two)
    # Both hosts computed the same validation losses (identical parameters, all-reduced sums).
    assert VALIDATION_LOSS.findall(logs[0]) == VALIDATION_LOSS.findall(logs[1])
    assert (tmp_path / "algo-1" / "model" / "manifest.json").exists()
    assert not (tmp_path / "algo-2" / "model" / "manifest.json").exists()
