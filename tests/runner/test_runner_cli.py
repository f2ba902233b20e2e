"""``pipealgos run`` as a process: Ctrl-C and SIGTERM stop the job as StopTrainingJob does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jobkit import dense_bytes, pca_request
from pipealgos.platform.runner.job import parse_job
from pipealgos.platform.runner.runner import JobRun, RunOptions


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def write_job(tmp_path, name: str) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.pbr").write_bytes(dense_bytes(np.random.default_rng(0).normal(size=(200, 6))))
    path = tmp_path / "job.json"
    path.write_text(json.dumps(pca_request(name, str(data), str(tmp_path / "out"), mode="Pipe")))
    return path


@pytest.mark.parametrize("send", ["SIGINT to the process group", "SIGTERM to the runner"])
def test_an_interrupt_stops_the_hosts_and_cleans_up(tmp_path, send):
    job = write_job(tmp_path, "interrupted")
    temp = tmp_path / "tmp"
    temp.mkdir()
    runner = subprocess.Popen([sys.executable, "-m", "pipealgos.cli", "run", str(job), "--progress", "plain"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "TMPDIR": str(temp)})
    deadline = time.monotonic() + 60
    while not children(runner.pid):  # the host has started
        assert time.monotonic() < deadline and runner.poll() is None, runner.communicate()
        time.sleep(0.01)
    (host,) = children(runner.pid)
    if send.startswith("SIGINT"):
        os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    else:
        os.kill(runner.pid, signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=30)
    assert runner.returncode == 3, stderr
    assert "Traceback" not in stderr and "received: stopping the job" in stderr
    summary = json.loads(stdout)
    assert summary["TrainingJobStatus"] == "Stopped" and summary["SecondaryStatus"] == "Stopped"
    assert not alive(host)
    assert list(temp.iterdir()) == []  # no pipealgos-run-* (nor pack) folder left behind


def test_a_stop_before_any_host_started_abandons_the_preparation(tmp_path):
    job = json.loads(write_job(tmp_path, "early").read_text())
    run = JobRun(parse_job(job), RunOptions(progress="plain", work_dir=tmp_path / "work"))
    run.list_inputs = lambda: run.request_stop("SIGINT received")  # the signal arrives while listing
    result = run.run()
    assert (result.status, result.secondary, result.exit_status) == ("Stopped", "Stopped", 3)
    assert result.summary["ExitCodes"] == {} and "ModelArtifacts" not in result.summary
    assert list((tmp_path / "work").iterdir()) == [] and not (tmp_path / "out").exists()


def test_a_pipealgos_folder_in_the_current_directory_does_not_shadow_the_package(tmp_path):
    job = write_job(tmp_path, "shadowed")
    clone = tmp_path / "pipealgos"  # the parent of a clone holds the clone's folder ...
    clone.mkdir()
    (clone / "__init__.py").write_text("raise ImportError('the current folder shadowed the installed package')\n")
    console_script = Path(sys.executable).with_name("pipealgos")
    proc = subprocess.run([str(console_script), "run", str(job), "--progress", "plain"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["TrainingJobStatus"] == "Completed"
