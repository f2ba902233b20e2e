"""A 2-host LDA job: two real `train` processes on loopback (gloo), each with its own ML root
and part of the documents. The moments are sums, so the hosts' all-reduced model is the
one-host model on all the documents, up to float rounding."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import make_ml_root, read_model, recordio_bytes, write_channel_files
from test_lda import fit, synthetic_corpus

from pipealgos.platform.runner.hosts import free_port

HOSTS = ("algo-1", "algo-2")
HP = {"num_topics": 5, "feature_dim": 300, "mini_batch_size": 500}


@pytest.mark.slow
def test_two_hosts_train_the_single_host_model(tmp_path):
    counts, _, _ = synthetic_corpus(4000, 300, 5, seed=4)
    single, _ = fit(counts, 5)
    env = {**os.environ, "PIPEALGOS_MASTER_ADDR": "127.0.0.1", "PIPEALGOS_MASTER_PORT": str(free_port()),
           "PIPEALGOS_ALGORITHM": "lda", "PIPEALGOS_COLLECTIVE_TIMEOUT": "60"}
    processes = []
    for host, rows in zip(HOSTS, (slice(0, 1300), slice(1300, 4000))):  # uneven shards
        root = tmp_path / host
        make_ml_root(root, HP, {"train": {"TrainingInputMode": "File"}}, hosts=HOSTS, current=host)
        write_channel_files(root, "train", [recordio_bytes(sp.csr_matrix(counts[rows]))])
        processes.append(subprocess.Popen([sys.executable, "-m", "pipealgos.cli", "train", "--ml-root", str(root)],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(logs)
    multi = read_model(tmp_path / "algo-1")
    assert not (tmp_path / "algo-2" / "model" / "manifest.json").exists()  # the leader writes the model
    np.testing.assert_allclose(multi["beta"], single.beta, atol=1e-5)
    np.testing.assert_allclose(multi["alpha"], single.alpha, rtol=1e-4)
