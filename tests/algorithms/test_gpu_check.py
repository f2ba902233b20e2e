"""benchmarks/gpu_check.py at a tiny size on the CPU, so the GPU measurement cannot rot
between the runs on a lent GPU: every registered algorithm trains through it, the feed-alone
rows are there, and a CUDA request without a GPU falls back to the CPU with a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipealgos.platform.registry import ALGORITHMS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_every_algorithm_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000", "--sparse-features", "2000",
                           "--devices", "cpu,cuda", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())["results"]
    jobs = {row["job"]: row for row in results if "job" in row}
    assert {"pca", "pca-randomized"} <= set(jobs)
    trained = {job.removesuffix("-randomized") for job, row in jobs.items() if row["cpu_s"] > 0}
    assert trained == set(ALGORITHMS)
    feeds = {(row["feed"], row["device"]) for row in results if "feed" in row}
    assert feeds == {(kind, device) for kind in ("dense", "sparse") for device in ("decode only", "cpu")}
    if "no CUDA device here" in done.stdout:
        assert all("cuda_s" not in row for row in jobs.values())
    else:
        assert all("cuda_s" in row for row in jobs.values())
