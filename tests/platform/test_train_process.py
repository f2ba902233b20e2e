"""`train` as SageMaker runs it: a real process, a real FIFO, a real SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlroot import make_ml_root, read_model, recordio_bytes, write_channel_files

from pipealgos.platform.train import Terminated, _on_sigterm

TRAIN = str(Path(sys.executable).parent / "train")
HP = {"feature_dim": 5, "num_components": 2, "mini_batch_size": 20}


def test_train_script_file_mode_prints_sagemaker_lines(tmp_path):
    root = make_ml_root(tmp_path, HP, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [recordio_bytes(np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32))])
    env = {**os.environ, "PIPEALGOS_ALGORITHM": "pca"}
    done = subprocess.run([TRAIN, "--ml-root", str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "#progress_metric: host=algo-1, completed 100 % of epochs" in done.stdout
    assert read_model(root)["v"].shape == (5, 2)


def test_sigterm_during_pipe_training_writes_failure_promptly(tmp_path):
    root = make_ml_root(tmp_path, HP, {"train": {"TrainingInputMode": "Pipe"}})
    fifo = root / "input" / "data" / "train_0"
    os.mkfifo(fifo)
    env = {**os.environ, "PIPEALGOS_ML_ROOT": str(root), "PIPEALGOS_ALGORITHM": "pca", "PIPEALGOS_PIPE_TIMEOUT": "120"}
    proc = subprocess.Popen([TRAIN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = open(fifo, "wb")  # the platform attaches and streams slowly: training is mid-epoch
    writer.write(recordio_bytes(np.ones((50, 5), np.float32)))
    writer.flush()
    time.sleep(1.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    finally:
        writer.close()
    assert time.monotonic() - started < 10
    assert proc.returncode == 143
    assert "SIGTERM" in (root / "output" / "failure").read_text()
    assert not (root / "model" / "manifest.json").exists()


def test_after_the_first_sigterm_later_ones_are_ignored():
    """StopTrainingJob may signal again while the job winds down: the first SIGTERM turns the
    handler off, so a second cannot interrupt writing the failure file. (Checked on the handler
    itself: signals sent to a process in quick succession coalesce, so a process test could not
    tell the two behaviours apart.)"""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Terminated):
            _on_sigterm(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def _logged_threads(tmp_path, extra_env):
    root = make_ml_root(tmp_path, HP, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [recordio_bytes(np.ones((40, 5), np.float32))])
    env = {k: v for k, v in os.environ.items() if k != "PIPEALGOS_COMPUTE_THREADS"}
    env.update({"PIPEALGOS_ALGORITHM": "pca", **extra_env})
    done = subprocess.run([TRAIN, "--ml-root", str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return re.search(r"device cpu, (\d+) compute thread\(s\)", done.stdout + done.stderr).group(1)


def test_cpu_training_leaves_a_core_to_the_reader_thread(tmp_path):
    """torch gets one thread fewer than it would take by default (a thread per core, or
    OMP_NUM_THREADS), never fewer than 1; PIPEALGOS_COMPUTE_THREADS sets the count outright."""
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert _logged_threads(tmp_path / "a", {}) == str(max(1, int(default) - 1))
    assert _logged_threads(tmp_path / "b", {"OMP_NUM_THREADS": "1"}) == "1"
    assert _logged_threads(tmp_path / "c", {"OMP_NUM_THREADS": "1", "PIPEALGOS_COMPUTE_THREADS": "3"}) == "3"
