"""Real `serve` processes on loopback for the serving tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90  # imports (torch) on a busy 2-core CI machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log: Path

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """One request on a fresh connection: (status, headers, body)."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def stop(self, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(ml_root: Path, log: Path, env: dict | None = None, workers: int = 2, host: str | None = "127.0.0.1",
                 port_from_env: bool = True, extra_args: tuple[str, ...] = ()) -> ServerProcess:
    """``serve --ml-root ML_ROOT`` as SageMaker runs it (port from SAGEMAKER_BIND_TO_PORT, or
    ``--port`` when not ``port_from_env``; ``--host`` unless None; then ``extra_args``); returns
    once /ping answers 200."""
    port = free_port()
    full_env = {**os.environ, "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers), **(env or {})}
    command = [str(VENV_BIN / "serve"), "--ml-root", str(ml_root), *(["--host", host] if host else []), *extra_args]
    if port_from_env:
        full_env["SAGEMAKER_BIND_TO_PORT"] = str(port)
    else:
        full_env.pop("SAGEMAKER_BIND_TO_PORT", None)
        command += ["--port", str(port)]
    handle = open(log, "wb")
    process = subprocess.Popen(command, env=full_env, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}:\n{server.logs()}")
        try:
            if server.request("GET", "/ping")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"serve did not answer /ping within {START_TIMEOUT_S} s:\n{server.logs()}")


def training_rows(n: int = 300, d: int = 6, seed: int = 0) -> np.ndarray:
    """Correlated rows with a non-zero mean, so every principal component matters."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 3).astype(np.float32)
