"""A finished multi-host job frees its process group before the interpreter shuts down.

gloo threads still alive at shutdown could end a host that had finished its work with SIGABRT
("terminate called without an active exception"; seen once in CI, after NTM's 2-host job).
The group outlived ``destroy_process_group`` whenever ``torch.distributed.nn.functional`` was
imported after the group existed (``torch.optim`` imports it): its functions keep
``group.WORLD`` as a default argument. Two real hosts run a real job in-process here and list
the threads left after ``run_training`` returns: none of gloo's may remain, for every algorithm
(any of them could keep a group reference of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import make_ml_root, recordio_bytes, write_channel_files

from pipealgos.platform.runner.hosts import free_port

HOSTS = ("algo-1", "algo-2")
FEATURES = 20
# Small jobs, one per algorithm; the labelled ones get a regression label.
JOBS = {
    "pca": ({"feature_dim": FEATURES, "num_components": 3, "mini_batch_size": 50}, False),
    "kmeans": ({"feature_dim": FEATURES, "k": 3, "mini_batch_size": 50}, False),
    "linear-learner": ({"feature_dim": FEATURES, "predictor_type": "regressor", "epochs": 2,
                        "mini_batch_size": 50}, True),
    "factorization-machines": ({"feature_dim": FEATURES, "num_factors": 2, "predictor_type": "regressor",
                                "epochs": 2, "mini_batch_size": 50}, True),
    "lda": ({"feature_dim": FEATURES, "num_topics": 3, "mini_batch_size": 50}, False),
    "ntm": ({"feature_dim": FEATURES, "num_topics": 3, "epochs": 2, "mini_batch_size": 50}, False),
    "randomcutforest": ({"feature_dim": FEATURES, "num_trees": 50, "num_samples_per_tree": 20}, False),
}

# Runs one host's job in this interpreter, then prints the names of the threads left.
HOST_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from pipealgos.platform.config import MLRoot
    from pipealgos.platform.train import run_training
    status = run_training(MLRoot(Path(sys.argv[1])), sys.argv[2])
    tasks = os.listdir("/proc/self/task")
    names = sorted(open(f"/proc/self/task/{task}/comm").read().strip() for task in tasks)
    print("threads left:", ",".join(names))
    sys.exit(status)
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc")
@pytest.mark.parametrize("algorithm", sorted(JOBS))
def test_a_finished_host_leaves_no_gloo_threads(tmp_path, algorithm):
    hyperparameters, labelled = JOBS[algorithm]
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, size=(200, FEATURES)).astype(np.float32)  # word counts, also fine as features
    labels = counts @ rng.normal(size=FEATURES).astype(np.float32) if labelled else None
    env = {**os.environ, "PIPEALGOS_MASTER_ADDR": "127.0.0.1", "PIPEALGOS_MASTER_PORT": str(free_port()),
           "PIPEALGOS_COLLECTIVE_TIMEOUT": "60"}
    processes = []
    for host, rows in zip(HOSTS, (slice(0, 100), slice(100, 200))):
        root = make_ml_root(tmp_path / host, hyperparameters, {"train": {}}, hosts=HOSTS, current=host)
        features = sp.csr_matrix(counts[rows]) if algorithm == "ntm" else counts[rows]
        write_channel_files(root, "train", [recordio_bytes(features, None if labels is None else labels[rows])])
        processes.append(subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, str(root), algorithm], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(logs)
    for host, log in zip(HOSTS, logs):
        left = [line for line in log.splitlines() if line.startswith("threads left:")]
        assert len(left) == 1, log
        assert "gloo" not in left[0], f"{host} still runs gloo threads after the job: {left[0]}"
