"""`make demo`: a Pipe-mode PCA training job on generated data, the way SageMaker runs one.

Generates a small dataset of 20-feature records with a planted 3-dimensional structure,
lays out an ML root, creates the `train_0` FIFO and streams the RecordIO-protobuf bytes
into it from a separate process (the platform's part), runs `train`, and prints the
components it found beside the planted ones.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipealgos.io import write_dense
from pipealgos.platform.model_store import load_model

OUT = Path("demo-out")


def main() -> int:
    rng = np.random.default_rng(42)
    planted = np.linalg.qr(rng.normal(size=(20, 3)))[0]
    x = (rng.normal(size=(20_000, 3)) * [9.0, 5.0, 3.0]) @ planted.T + rng.normal(scale=0.1, size=(20_000, 20))
    buffer = io.BytesIO()
    write_dense(buffer, x.astype(np.float32))

    shutil.rmtree(OUT, ignore_errors=True)
    config = OUT / "input" / "config"
    config.mkdir(parents=True)
    (OUT / "input" / "data").mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(
        {"feature_dim": "20", "num_components": "3", "mini_batch_size": "500"}))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {"TrainingInputMode": "Pipe"}}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    data_file = OUT / "train.pbr"
    data_file.write_bytes(buffer.getvalue())
    fifo = OUT / "input" / "data" / "train_0"
    os.mkfifo(fifo)
    print(f"demo: {len(x)} records ({data_file.stat().st_size / 1e6:.1f} MB) -> Pipe-mode FIFO {fifo}")

    feeder = subprocess.Popen(["sh", "-c", f"cat '{data_file}' > '{fifo}'"])
    train = Path(sys.executable).parent / "train"
    status = subprocess.call([str(train), "--ml-root", str(OUT), "--algorithm", "pca"])
    feeder.wait()
    if status != 0:
        print((OUT / "output" / "failure").read_text(), file=sys.stderr)
        return status

    model = load_model(OUT / "model")
    s, v = model.arrays["s"], model.arrays["v"]
    print("\nsingular values (ascending, as SageMaker's PCA stores them):", np.round(s, 1))
    overlap = np.abs(v.T @ planted)
    print("|cosine| between found components (rows) and planted directions (columns):")
    print(np.round(overlap, 3))
    print(f"\nmodel written to {OUT / 'model'}: {sorted(p.name for p in (OUT / 'model').iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
