"""``serve``: the Flask app under gunicorn, as SageMaker runs a hosting container.

The model is loaded once, in the gunicorn master, before the workers fork (``preload_app``):
a broken model stops the server at start-up with a clear message instead of failing every
worker, ``/ping`` answers as soon as a worker is up, and the workers share the model's pages.

Workers are gunicorn's threaded workers (``gthread``) so clients can keep connections alive
(the SDK and boto3 both reuse connections), with ``THREADS_PER_WORKER`` threads each: a worker
accepts connections whether or not a thread is free, so with one thread a single slow client
would queue every request the kernel hands that worker, ``/ping`` included (SageMaker's probe
gives up after 2 s). Slow clients are bounded too: every accepted socket inherits its
listener's ``SO_RCVTIMEO`` / ``SO_SNDTIMEO`` of ``PIPEALGOS_REQUEST_READ_TIMEOUT`` seconds (a
client silent that long mid-headers is disconnected, mid-body answered 408), and the app bounds
the whole body to the same time (``app.BodyDeadlines``). ``timeout``
(``SAGEMAKER_MODEL_SERVER_TIMEOUT``) is gunicorn's worker timeout: a worker whose event loop
stops answering that long is killed and replaced. A slow but live inference is not cut off
(SageMaker's own 60 s invocation limit does that for real-time endpoints). SIGTERM (SageMaker's stop, followed by
SIGKILL 30 s later) lets in-flight requests finish for up to ``GRACEFUL_TIMEOUT_S``, then exits 0.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import threading
from pathlib import Path

from gunicorn.app.base import BaseApplication

from pipealgos.platform.metrics import configure_logging

from .app import create_app
from .settings import request_read_timeout

GRACEFUL_TIMEOUT_S = 25  # inside SageMaker's 30 s between SIGTERM and SIGKILL
KEEPALIVE_S = 75  # longer than common client pool idle times, so the server rarely drops a reused connection
THREADS_PER_WORKER = 4  # see the module docstring; measured with benchmarks/serve_load.py
# Workers touch a heartbeat file twice per request; on a container's overlay/disk file system
# that cost ~0.2 ms per touch here, on tmpfs next to nothing (gunicorn's own advice for Docker).
HEARTBEAT_DIR = "/dev/shm"


class _Server(BaseApplication):
    def __init__(self, app, options: dict) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        known = self.cfg.settings
        for key, value in self._options.items():
            if key in known:  # settings newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self):
        return self._app


def _post_fork(server, worker) -> None:
    """Torch (if an algorithm uses it) gets this worker's share of the cores, not all of them."""
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // server.num_workers))


def _socket_timeouts(seconds: float):
    """A gunicorn ``when_ready`` hook: ``SO_RCVTIMEO`` / ``SO_SNDTIMEO`` on the listening
    sockets, which Linux copies to every accepted connection. A worker thread blocked on a
    client that went silent then gets EAGAIN after ``seconds`` instead of waiting forever."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))

    def when_ready(server) -> None:
        for listener in server.LISTENERS:
            for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                listener.sock.setsockopt(socket.SOL_SOCKET, option, value)

    return when_ready


class _SilentClientFilter(logging.Filter):
    """gunicorn logs the EAGAIN of a client silent mid-headers as "Socket error processing
    request." with a traceback; it is the timeout working, so one info line says so instead."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (BlockingIOError, TimeoutError)):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "closed a connection silent for %g s mid-request (PIPEALGOS_REQUEST_READ_TIMEOUT)",
                (self.seconds,), None, None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_answering = threading.local()  # .request: the gunicorn request this worker thread is answering


def _remember_request(worker, req) -> None:
    """gunicorn's ``pre_request`` hook."""
    _answering.request = req


class _CloseAfterTimeout:
    """WSGI wrapper: after a 408 the connection is closed (the rest of that body may still be
    on its way, or never come). gunicorn ignores an app's ``Connection: close``, so this sets
    gunicorn's own flag on the request being answered."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        def start(status: str, headers, exc_info=None):
            if status.startswith("408"):
                _answering.request.must_close = True
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def run_server(model_dir: Path, port: int, workers: int, timeout: int, host: str,
               threads: int = THREADS_PER_WORKER) -> None:
    """Serve the model in ``model_dir`` on ``host:port`` until SIGTERM; returns when stopped."""
    configure_logging()
    app = create_app(Path(model_dir))
    read_timeout = request_read_timeout()
    logging.getLogger("gunicorn.error").addFilter(_SilentClientFilter(read_timeout))
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "preload_app": True,
        "post_fork": _post_fork,
        "when_ready": _socket_timeouts(read_timeout),
        "pre_request": _remember_request,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "pipealgos-serve",
        "worker_tmp_dir": HEARTBEAT_DIR if os.access(HEARTBEAT_DIR, os.W_OK) else None,
        "control_socket_disable": True,  # gunicorn >= 25 would otherwise create a shared socket file
    }
    _Server(_CloseAfterTimeout(app), options).run()
