"""A finished multi-host job frees its process group before the interpreter shuts down.

gloo threads still alive at shutdown could end a host that had finished its work with SIGABRT
("terminate called without an active exception"; seen once in CI, after NTM's 2-host job).
The group outlived ``destroy_process_group`` whenever ``torch.distributed.nn.functional`` was
imported after the group existed (``torch.optim`` imports it): its functions keep
``group.WORLD`` as a default argument. Two real hosts run a real job in-process here and list
the threads left after ``run_training`` returns: none of gloo's may remain."""

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

# Runs one host's job in this interpreter, then prints the names of the threads left.
HOST_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from pipealgos.platform.config import MLRoot
    from pipealgos.platform.train import run_training
    status = run_training(MLRoot(Path(sys.argv[1])), "ntm")
    tasks = os.listdir("/proc/self/task")
    names = sorted(open(f"/proc/self/task/{task}/comm").read().strip() for task in tasks)
    print("threads left:", ",".join(names))
    sys.exit(status)
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc")
def test_a_finished_host_leaves_no_gloo_threads(tmp_path):
    rng = np.random.default_rng(0)
    documents = sp.csr_matrix(rng.poisson(1.0, size=(200, 20)).astype(np.float32))
    env = {**os.environ, "PIPEALGOS_MASTER_ADDR": "127.0.0.1", "PIPEALGOS_MASTER_PORT": str(free_port()),
           "PIPEALGOS_COLLECTIVE_TIMEOUT": "60"}
    processes = []
    for host, shard in zip(HOSTS, (documents[:100], documents[100:])):
        root = make_ml_root(tmp_path / host, {"feature_dim": 20, "num_topics": 3, "epochs": 2,
                                              "mini_batch_size": 50},
                            {"train": {}}, hosts=HOSTS, current=host)
        write_channel_files(root, "train", [recordio_bytes(shard)])
        processes.append(subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, str(root)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(logs)
    for host, log in zip(HOSTS, logs):
        left = [line for line in log.splitlines() if line.startswith("threads left:")]
        assert len(left) == 1, log
        assert "gloo" not in left[0], f"{host} still runs gloo threads after the job: {left[0]}"
