"""Hosts as processes: launch ``train`` per host, stream its log, stop it, pack its artifacts.

Each host runs ``python -P -m pipealgos.cli train --ml-root <its root>`` in its own process
group (so a stop reaches everything it started). ``-P`` keeps the current folder off
``sys.path``: run from the parent of a clone, its ``pipealgos/`` folder would otherwise shadow
the installed package the runner itself runs. The host gets the request's ``Environment`` plus
``TRAINING_JOB_NAME``/``TRAINING_JOB_ARN`` as SageMaker sets them, and
``PIPEALGOS_MASTER_ADDR=127.0.0.1``/``PIPEALGOS_MASTER_PORT=<free port>`` so that
``torch.distributed`` finds ``algo-1`` on loopback. stdout and stderr are merged, saved to
``<work>/<host>.log`` and handed line by line to a sink (the progress display), like one
CloudWatch stream per host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..config import MLRoot
from .job import Job

ARN_PREFIX = "arn:aws:sagemaker:local:000000000000:training-job/"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def host_environment(job: Job, master_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(dict(job.environment))
    env.update({
        "TRAINING_JOB_NAME": job.name,
        "TRAINING_JOB_ARN": ARN_PREFIX + job.name,
        "PIPEALGOS_MASTER_ADDR": "127.0.0.1",
        "PIPEALGOS_MASTER_PORT": str(master_port),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("PIPEALGOS_ML_ROOT", None)
    # All hosts share this machine's cores: without a cap each would start a thread per core
    # and they would slow one another down many times over (seen 10x with k-means on 2 cores).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // job.instance_count)))
    return env


class HostProcess:
    """One host's ``train`` process."""

    def __init__(self, host: str, ml: MLRoot, algorithm: str, env: dict[str, str], log_path: Path,
                 sink: Callable[[str, str], None]) -> None:
        self.host = host
        self.ml = ml
        self.log_path = log_path
        self.exit_code: int | None = None
        self.exited_at: float | None = None
        self._lock = threading.Lock()
        command = [sys.executable, "-P", "-m", "pipealgos.cli", "train", "--ml-root", str(ml.root), "--algorithm", algorithm]
        self._log = open(log_path, "w", buffering=1)
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self._pump = threading.Thread(target=self._copy_log, args=(sink,), daemon=True, name=f"log-{host}")
        self._pump.start()

    def _copy_log(self, sink: Callable[[str, str], None]) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._log.write(line + "\n")
            sink(self.host, line)
        self._log.close()

    def poll(self) -> int | None:
        with self._lock:
            if self.exit_code is None:
                code = self.proc.poll()
                if code is not None:
                    self.exit_code, self.exited_at = code, time.monotonic()
            return self.exit_code

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the host's process group (nothing if it has exited)."""
        if self.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def is_stopped(self) -> bool:
        """Running but stopped (SIGSTOP, a debugger): it will never answer its peers nor fail."""
        if self.poll() is not None:
            return False
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return False  # gone, or no /proc: nothing to tell
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")  # the state follows "(command)"

    def kill_and_wait(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()
        self.poll()

    def wait_log(self, timeout: float = 5.0) -> None:
        self._pump.join(timeout)

    def failure_text(self) -> str | None:
        """``output/failure`` as the host wrote it, if it did."""
        path = self.ml.failure_file
        return path.read_text().strip() if path.exists() else None


def pack(folders: Iterable[Path], archive: Path) -> Path:
    """tar.gz of the files of several hosts' folders merged (names are relative to each folder).

    Built-ins name their files per host (``model_algo-1``), so names do not collide; a model
    store's unfinished ``.staging-*`` folders are left out."""
    with tarfile.open(archive, "w:gz") as tar:
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                relative = path.relative_to(folder)
                if path.is_file() and not relative.parts[0].startswith(".staging-"):
                    tar.add(path, arcname=str(relative))
    return archive
