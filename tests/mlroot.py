"""Build SageMaker-style ML roots and feed Pipe-mode FIFOs, as the platform would."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np

from pipealgos.io import write_records


def make_ml_root(root: Path, hyperparameters: dict, channels: dict[str, dict], hosts=("algo-1",), current="algo-1") -> Path:
    """``channels``: name -> inputdataconfig entry (e.g. {"TrainingInputMode": "Pipe"})."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (root / "input" / "data").mkdir(parents=True, exist_ok=True)
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "output").mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": current, "hosts": list(hosts)}))
    return root


def recordio_bytes(features, labels=None) -> bytes:
    out = io.BytesIO()
    write_records(out, features, labels)
    return out.getvalue()


def write_channel_files(root: Path, channel: str, parts: list[bytes]) -> None:
    folder = root / "input" / "data" / channel
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(parts):
        (folder / f"part-{i:04d}.pbr").write_bytes(data)


class FifoFeeder:
    """Creates ``<channel>_<epoch>`` FIFOs and writes each one's bytes from a thread."""

    def __init__(self, root: Path, channel: str, epochs: list[bytes]) -> None:
        self.threads = []
        for epoch, data in enumerate(epochs):
            path = root / "input" / "data" / f"{channel}_{epoch}"
            os.mkfifo(path)
            thread = threading.Thread(target=self._feed, args=(path, data), daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _feed(path: Path, data: bytes) -> None:
        try:
            with open(path, "wb") as fifo:
                fifo.write(data)
        except BrokenPipeError:
            pass

    def join(self, timeout: float = 10) -> None:
        for thread in self.threads:
            thread.join(timeout)


def read_model(root: Path) -> dict[str, np.ndarray]:
    from pipealgos.platform.model_store import load_model

    return load_model(root / "model").arrays
