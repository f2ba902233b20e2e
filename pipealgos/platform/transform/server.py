"""The model server of a transform job: ``serve`` in a subprocess, as SageMaker starts the image.

The model is put where ``serve`` finds it (a ``model.tar.gz`` is fetched into a folder of its
own, which ``serve`` extracts safely; a local model folder is served as it is). ``serve`` runs
as ``python -P -m pipealgos.cli serve`` on a free loopback port with the batch environment
SageMaker sets (``SAGEMAKER_BATCH=true``, and ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` /
``SAGEMAKER_BATCH_STRATEGY`` / ``SAGEMAKER_MAX_CONCURRENT_TRANSFORMS`` when the job sets them)
plus the model's and the job's ``Environment``. Its log lines go to the progress display as
``[serve] ...``. :meth:`ModelServer.start` waits for ``GET /ping`` (or for the process to exit,
which fails the job with the end of its log); :meth:`stop` sends SIGTERM, then SIGKILL.

Invocations use one keep-alive HTTP connection per calling thread.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..runner.hosts import free_port
from ..runner.storage import RetryPolicy, Stores, local_path, read_range_with_retry

STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0  # SageMaker: SIGTERM, SIGKILL 30 s later
LOG_TAIL_LINES = 20
CHUNK = 8 << 20


class ServerError(RuntimeError):
    """The server did not start, or stopped answering; the message has the end of its log."""


def fetch_model(stores: Stores, uri: str, folder: Path, retry: RetryPolicy) -> Path:
    """The folder ``serve`` should serve for ``uri``: a local model folder as it is, else a
    folder holding the ``model.tar.gz`` (downloaded in ranges when it is in S3)."""
    if not uri.startswith("s3://") and local_path(uri).is_dir():
        return local_path(uri)
    store = stores.for_uri(uri)
    size = store.stat(uri, "model.tar.gz").size
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.tar.gz", "wb") as out:
        for start in range(0, size, CHUNK):
            out.write(read_range_with_retry(store, uri, start, min(size, start + CHUNK), retry))
    return folder


class ModelServer:
    """One ``serve`` process on loopback and the client side of its HTTP contract."""

    def __init__(self, model_dir: Path, environment: dict[str, str], sink: Callable[[str, str], None],
                 startup_timeout: float = STARTUP_TIMEOUT_S, request_timeout: float = 600.0) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.request_timeout = request_timeout
        self.startup_timeout = startup_timeout
        self._tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._local = threading.local()
        env = {**os.environ, **environment, "PYTHONUNBUFFERED": "1"}
        env.pop("SAGEMAKER_BIND_TO_PORT", None)  # the port is ours to choose, given below
        command = [sys.executable, "-P", "-m", "pipealgos.cli", "serve", "--model-dir", str(model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self._pump = threading.Thread(target=self._copy_log, args=(sink,), daemon=True, name="serve-log")
        self._pump.start()

    def _copy_log(self, sink: Callable[[str, str], None]) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._tail.append(line)
            sink("serve", line)

    def log_tail(self) -> str:
        return "\n".join(self._tail)

    def wait_ready(self) -> float:
        """Wait for ``GET /ping`` to answer 200; the seconds it took. Raises ServerError."""
        started = time.monotonic()
        while time.monotonic() - started < self.startup_timeout:
            if self.proc.poll() is not None:
                self._pump.join(5)
                raise ServerError(f"the model server exited with status {self.proc.returncode} before answering "
                                  f"/ping; its log ends:\n{self.log_tail()}")
            try:
                status, _ = self.request("GET", "/ping", timeout=2)
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerError(f"the model server did not answer /ping within {self.startup_timeout:g} s; its log ends:\n"
                          f"{self.log_tail()}")

    def execution_parameters(self) -> dict:
        """``GET /execution-parameters`` as a dict; ``{}`` when it does not answer 200 JSON (the defaults apply)."""
        try:
            status, body = self.request("GET", "/execution-parameters", timeout=10)
            answer = json.loads(body) if status == 200 else {}
        except (OSError, ValueError):
            return {}
        return answer if isinstance(answer, dict) else {}

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float | None = None) -> tuple[int, bytes]:
        """(status, body) of one request on this thread's connection; OSError when the connection fails
        (the connection is dropped, so the next call opens a fresh one)."""
        conn = self._connection(timeout or self.request_timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._local.conn = None
            raise ConnectionError(f"{method} {path} on the model server failed: {type(exc).__name__}: {exc}") \
                from None

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        if accept:
            headers["Accept"] = accept
        return self.request("POST", "/invocations", body, headers)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL ``STOP_GRACE_S`` later."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._pump.join(5)

