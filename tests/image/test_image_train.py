"""`docker run -v ROOT:/opt/ml IMAGE train`, as SageMaker runs a training job, against the built image.

The ML root is a host directory; in Pipe mode its FIFOs are made and fed from the host through
the bind mount. Trained models are checked against numpy answers, not just for existence.
"""

from __future__ import annotations

import os
import time

import pytest
from image_helpers import podman, require_algorithm, wait, wait_for_log
from image_jobs import CHECKS, JOBS, pca_job
from mlroot import FifoFeeder, make_ml_root, read_model, recordio_bytes, write_channel_files


@pytest.mark.parametrize("mode", ["File", "Pipe"])
@pytest.mark.parametrize("algorithm", ["pca", "kmeans"])
def test_train_writes_the_model(tmp_path, containers, image_algorithms, algorithm, mode):
    require_algorithm(image_algorithms, algorithm)
    hyperparameters, x = JOBS[algorithm]()
    root = make_ml_root(tmp_path / "ml", hyperparameters, {"train": {"TrainingInputMode": mode}})
    feeder = None
    if mode == "File":
        write_channel_files(root, "train", [recordio_bytes(x[:250]), recordio_bytes(x[250:])])
    else:
        feeder = FifoFeeder(root, "train", [recordio_bytes(x)])

    code, log = containers.run(["train"], root, env={"PIPEALGOS_ALGORITHM": algorithm})

    assert code == 0, log
    assert not (root / "output" / "failure").exists(), (root / "output" / "failure").read_text()
    if feeder is not None:
        feeder.join()
    CHECKS[algorithm](read_model(root), x)
    assert "#quality_metric" in log or "#throughput_metric" in log, log


@pytest.mark.parametrize("algorithm, bad", [("pca", {"num_components": "0"}), ("kmeans", {"k": "zero"})])
def test_bad_hyperparameter_fails_with_reason(tmp_path, containers, image_algorithms, algorithm, bad):
    require_algorithm(image_algorithms, algorithm)
    hyperparameters, x = JOBS[algorithm]()
    root = make_ml_root(tmp_path / "ml", {**hyperparameters, **bad}, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [recordio_bytes(x)])

    code, log = containers.run(["train"], root, env={"PIPEALGOS_ALGORITHM": algorithm})

    assert code == 1, log
    failure = (root / "output" / "failure").read_text()
    (name, value), = bad.items()
    assert failure.startswith("ClientError:") and name in failure and value in failure, failure
    assert not (root / "model" / "manifest.json").exists()


def test_sigterm_during_training_stops_promptly_with_reason(tmp_path, containers):
    """`docker stop` (SageMaker's StopTrainingJob) while a Pipe-mode job waits for data."""
    hyperparameters, _ = pca_job()
    root = make_ml_root(tmp_path / "ml", hyperparameters, {"train": {"TrainingInputMode": "Pipe"}})
    os.mkfifo(root / "input" / "data" / "train_0")  # no writer: the job blocks reading it
    container = containers.start(["train"], root, env={"PIPEALGOS_ALGORITHM": "pca", "PIPEALGOS_PIPE_TIMEOUT": "600"})
    wait_for_log(container, "pipealgos pca: host", timeout=60)

    started = time.monotonic()
    podman("stop", "-t", "60", container, timeout=90)  # SIGTERM, SIGKILL only after 60 s
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"the container took {elapsed:.1f} s to stop after SIGTERM"
    assert wait(container, timeout=10) == 143
    assert "SIGTERM" in (root / "output" / "failure").read_text()
    assert not (root / "model" / "manifest.json").exists()
